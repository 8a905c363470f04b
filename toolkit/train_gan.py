"""Train a GAN baseline from scratch (DCGAN or a residual SN-GAN, optionally pose-conditioned) and save its generator.

    accelerate launch -q toolkit/train_gan.py                       # built-in synthetic figures, CPU-friendly
    accelerate launch -q toolkit/train_gan.py --train_data_dir faces/ --resolution 64 --gan_loss hinge --r1_gamma 1
"""

from __future__ import annotations

import sys

from toolkit.gan.config import TrainGANConfig
from toolkit.training.cli import command

main = command(TrainGANConfig, "toolkit.gan.trainer:GANTrainer", __doc__)

if __name__ == "__main__":
    sys.exit(main())
