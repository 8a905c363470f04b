"""Train a diffusers UNet2DModel from scratch and save a DDPMPipeline.

    accelerate launch toolkit/train_unet.py                       # built-in synthetic figures, CPU-friendly
    accelerate launch toolkit/train_unet.py --config recipes/portraits_64.yaml --train_data_dir faces/
"""

from __future__ import annotations

import sys

from toolkit.config import parse_config
from toolkit.ddpm.config import TrainUNetConfig
from toolkit.errors import cli_errors


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Parse flags (and a recipe), train, print the summary, and publish if asked."""
    from toolkit.ddpm.trainer import DDPMTrainer
    from toolkit.training.loop import run

    cfg = parse_config(TrainUNetConfig, argv, description=__doc__.splitlines()[0])
    return run(DDPMTrainer, cfg)


if __name__ == "__main__":
    sys.exit(main())
