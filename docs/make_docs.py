"""Regenerate the option tables in docs/ from the config dataclasses: python docs/make_docs.py"""

from __future__ import annotations

from pathlib import Path

from toolkit.config import markdown_table
from toolkit.ddpm.config import TrainUNetConfig
from toolkit.ddpm.generate import DDPMSampleConfig
from toolkit.gan.config import TrainGANConfig
from toolkit.gan.generate import GANSampleConfig
from toolkit.lora.config import PoseLoraConfig
from toolkit.lora.generate import ControlNetSampleConfig
from toolkit.tune.config import TuneConfig
from toolkit.tune.score import ScoreConfig

HEADER = """# `train_unet.py` options

Generated from `toolkit/ddpm/config.py` (options shared by every trainer come from `toolkit/training/config.py`)
by `python docs/make_docs.py`. Every option works as a command-line flag
(`--name value`; booleans as `--name` / `--no-name`) and as a key in a recipe YAML (`--config recipe.yaml`). Flags
given on the command line override the recipe. An unknown key or a value of the wrong type is an error that names
the key.

"""

SAMPLE = """

# `python -m toolkit.sample ddpm` options

Images from a `train_unet.py` pipeline. `python -m toolkit.sample` without a command is this one, unless
`--controlnet` is given. Options of `toolkit.sample controlnet` are refused with a one-line error.

"""

SAMPLE_CONTROLNET = """

# `python -m toolkit.sample controlnet` options

Stable Diffusion + ControlNet-OpenPose (+ a pose LoRA) from a folder of poses; see [pose_lora.md](pose_lora.md).

"""


POSE_LORA = """# `train_pose_lora.py` options

Generated from `toolkit/lora/config.py` (options shared by every trainer come from `toolkit/training/config.py`)
by `python docs/make_docs.py`. Flags, recipe keys and errors work as for
`train_unet.py`. The workflow is in [pose_lora.md](pose_lora.md).

"""


def render() -> str:
    """The train_unet.py and sample options page."""
    return (HEADER + markdown_table(TrainUNetConfig) + SAMPLE + markdown_table(DDPMSampleConfig) + SAMPLE_CONTROLNET
            + markdown_table(ControlNetSampleConfig) + "\n")


GAN = """# `train_gan.py` options

Generated from `toolkit/gan/config.py` (options shared by every trainer come from `toolkit/training/config.py`)
by `python docs/make_docs.py`. Flags, recipe keys and errors work as for `train_unet.py`. What the GAN baselines are
for and how they compare is in [gan.md](gan.md).

"""

SAMPLE_GAN = """

# `python -m toolkit.sample gan` options

Images from a `train_gan.py` generator (`RUN/generator`).

"""


def render_gan() -> str:
    """The train_gan.py and sample gan options page."""
    return GAN + markdown_table(TrainGANConfig) + SAMPLE_GAN + markdown_table(GANSampleConfig) + "\n"


def render_pose_lora() -> str:
    """The train_pose_lora.py options page."""
    return POSE_LORA + markdown_table(PoseLoraConfig) + "\n"


TUNE = """# `python -m toolkit.tune` options

Generated from `toolkit/tune/config.py` by `python docs/make_docs.py`. `--config` is the trainer's recipe, the base
of every trial, and flags after `--` go to every trial's trainer. How a study works and what it measured:
[tune.md](tune.md).

"""

TUNE_SCORE = """

# `python -m toolkit.tune.score` options

What the tuner runs after a trial for the objectives scored from samples; it also scores any finished run by hand.

"""


def render_tune() -> str:
    """The toolkit.tune options page."""
    return TUNE + markdown_table(TuneConfig) + TUNE_SCORE + markdown_table(ScoreConfig) + "\n"


if __name__ == "__main__":
    (Path(__file__).parent / "train_unet.md").write_text(render())
    (Path(__file__).parent / "train_pose_lora.md").write_text(render_pose_lora())
    (Path(__file__).parent / "train_gan.md").write_text(render_gan())
    (Path(__file__).parent / "tune_options.md").write_text(render_tune())
