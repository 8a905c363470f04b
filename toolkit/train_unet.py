"""Train a diffusers UNet2DModel from scratch and save a DDPMPipeline.

    accelerate launch -q toolkit/train_unet.py                       # built-in synthetic figures, CPU-friendly
    accelerate launch -q toolkit/train_unet.py --config recipes/portraits_64.yaml --train_data_dir faces/
"""

from __future__ import annotations

import sys

from toolkit.ddpm.config import TrainUNetConfig
from toolkit.training.cli import command

main = command(TrainUNetConfig, "toolkit.ddpm.trainer:DDPMTrainer", __doc__)

if __name__ == "__main__":
    sys.exit(main())
