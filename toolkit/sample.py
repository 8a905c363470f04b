"""Generate images and a grid from a saved model: `ddpm` (train_unet.py), `controlnet` (SD + ControlNet + LoRA) or
`gan` (train_gan.py).

    python -m toolkit.sample ddpm --pipeline runs/ddpm-portraits --num_images 16 --num_inference_steps 20
    python -m toolkit.sample ddpm --pipeline runs/ddpm-figures --poses data/poses48/keypoints
    python -m toolkit.sample controlnet --pipeline SD_DIR --controlnet CONTROLNET --lora runs/pose-lora \\
        --poses poses/ --prompt "a photo of a dancer" --scheduler unipc
    python -m toolkit.sample gan --generator runs/gan-figures/generator --num_images 64

Without a command, --controlnet selects `controlnet` and anything else `ddpm`, as before the commands existed. Each
command refuses the other's options with a one-line error. With --poses an image is made per pose, named like the
pose file, so that `python -m toolkit.evaluate --poses` (or `evaluate_poses`) can pair them.
"""

from __future__ import annotations

import dataclasses
import sys

from toolkit.config import load_yaml, parse_config
from toolkit.errors import UserError, cli_errors

COMMANDS = {"ddpm": "images from a train_unet.py pipeline, unconditional or from --poses",
            "controlnet": "images from Stable Diffusion + ControlNet-OpenPose (+ --lora), from --poses",
            "gan": "images from a train_gan.py generator, unconditional or from --poses"}


def _commands() -> dict:
    """command -> (config class, function that samples and returns a status line)."""
    from toolkit.ddpm.generate import DDPMSampleConfig, sample_ddpm
    from toolkit.gan.generate import GANSampleConfig, sample_gan
    from toolkit.lora.generate import ControlNetSampleConfig, sample_controlnet

    return {"ddpm": (DDPMSampleConfig, sample_ddpm), "controlnet": (ControlNetSampleConfig, sample_controlnet),
            "gan": (GANSampleConfig, sample_gan)}


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _given(argv: list[str]) -> list[str]:
    """Option names given as flags (`--lora`, `--no-center_crop`, `--lora=x`) or as keys of the --config recipe."""
    names = [a.split("=")[0].removeprefix("--").removeprefix("no-") for a in argv if a.startswith("--")]
    recipes = [argv[i + 1] if a == "--config" else a.split("=", 1)[1] for i, a in enumerate(argv)
               if (a == "--config" and i + 1 < len(argv)) or a.startswith("--config=")]
    return names + (list(load_yaml(recipes[-1])) if recipes else [])  # the last --config wins, as in argparse


def split_command(argv: list[str], commands: dict) -> tuple[str, list[str]]:
    """The command (given first, or inferred from --controlnet) and the remaining flags; options that belong only
    to the other command, as flags or recipe keys, are a one-line error naming them."""
    inferred = not (argv and argv[0] in commands)
    if not inferred:
        command, argv = argv[0], argv[1:]
    given = _given(argv)
    if inferred:
        command = "controlnet" if "controlnet" in given else "ddpm"
    own = _names(commands[command][0]) | {"config", "help"}
    for other, (cls, _) in commands.items():
        wrong = [f"--{name}" for name in dict.fromkeys(given) if name not in own and name in _names(cls)]
        if other != command and wrong:
            hint = " (without a command, toolkit.sample is `ddpm` unless --controlnet is given)" if inferred else ""
            raise UserError(f"{', '.join(wrong)}: an option of `toolkit.sample {other}`, not of "
                            f"`toolkit.sample {command}`{hint}")
    return command, argv


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Pick the command, parse its flags (and a recipe), generate, and say what was written."""
    commands, argv = _commands(), list(sys.argv[1:] if argv is None else argv)
    if argv in (["-h"], ["--help"]):  # no command: say what the commands are
        print(__doc__.strip() + "\n\n" + "\n".join(f"  {name:<11} {text}" for name, text in COMMANDS.items())
              + "\n\nTheir options: python -m toolkit.sample COMMAND --help")
        return 0
    command, argv = split_command(argv, commands)
    config_cls, sample = commands[command]
    cfg = parse_config(config_cls, argv, description=f"toolkit.sample {command}: {config_cls.__doc__}")
    print(sample(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
