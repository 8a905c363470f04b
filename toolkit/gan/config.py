"""The configuration of `train_gan.py`: the shared from-scratch image options with GAN defaults, plus the networks,
the loss and its stabilisers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from toolkit.config import ConfigError, option, with_defaults
from toolkit.gan.augment import POLICIES
from toolkit.gan.models import GANArch
from toolkit.training.config import ScratchImageConfig


@dataclass
@with_defaults(resolution=32, random_flip=True, learning_rate=2e-4, adam_beta1=0.0, adam_beta2=0.99,
               adam_weight_decay=0.0, max_grad_norm=0.0, ema_max_decay=0.999, output_dir="runs/gan-figures", help={
                   "resolution": "training resolution in pixels (square): 3, 4 or 5 times a power of two, e.g. 32, "
                                 "48, 64, 96",
                   "learning_rate": "the generator's learning rate (AdamW, betas 0 / 0.99 as StyleGAN2's)",
                   "max_grad_norm": "gradient clipping norm of both networks (0: off, the usual GAN choice)",
                   "use_ema": "keep an EMA of the generator; used for validation, evaluation and the saved model",
                   "random_flip": "random horizontal flip (pose maps are redrawn from the mirrored, left/right-swapped "
                                 "keypoints)",
                   "conditioning": "pose: the OpenPose map enters the generator through an encoder at every scale "
                                   "and is concatenated to the discriminator's input (pix2pix); auto: pose when the "
                                   "data has poses (the built-in figures or a pose folder)",
                   "output_dir": "where the generator, samples, logs and checkpoints go",
                   "hub_model_id": "repository id, e.g. user/gan-portraits"})
class TrainGANConfig(ScratchImageConfig):
    """Options of `toolkit/train_gan.py`."""

    # --- networks
    model: Literal["dcgan", "resnet"] = option(
        "resnet", "dcgan: the DCGAN baseline; resnet: residual blocks with a spectrally normalised discriminator")
    z_dim: int = option(128, "latent size")
    gan_channels: int = option(32, "base width of both networks (the widest layers have 4-8x)")
    # --- loss and stabilisers
    gan_loss: Literal["ns", "hinge", "wgan"] = option(
        "hinge", "ns: non-saturating; hinge; wgan: Wasserstein (use with --gp_weight)")
    d_learning_rate: float | None = option(None, "the discriminator's learning rate (TTUR); none: --learning_rate")
    n_critic: int = option(1, "discriminator steps per generator step (5 is WGAN-GP's)")
    r1_gamma: float = option(0.0, "R1 penalty weight on real images (Mescheder et al.; 0.1-10 by resolution)")
    gp_weight: float = option(0.0, "WGAN-GP gradient penalty weight (10 in the paper)")
    diffaugment: str = option("color,translation,cutout", "DiffAugment policy for every image D sees, comma-"
                                                          "separated from color, translation, cutout; '' is off")
    # --- collapse watch
    collapse_threshold: float = option(
        0.5, "warn when the diversity of a fixed batch falls below this fraction of its best so far")

    POSITIVE = ScratchImageConfig.POSITIVE + ("z_dim", "gan_channels", "n_critic")

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.augment_policy) - set(POLICIES)
        if unknown:
            raise ConfigError(f"diffaugment: unknown {sorted(unknown)}; choose from {', '.join(POLICIES)}")
        for key in ("r1_gamma", "gp_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        given = [k for k in ("aug_scale_p", "aug_rotate_p", "aug_translate_p", "aug_color_p") if getattr(self, k)]
        if given:  # the generator would learn to make augmented images: the GAN's own is DiffAugment, on D's input
            raise ConfigError(f"{', '.join(given)}: train_gan.py has no augmentation labels, so its samples would "
                              "come out augmented; use --diffaugment (only --random_flip is safe here)")
        if self.d_learning_rate is not None and self.d_learning_rate <= 0:
            raise ConfigError(f"d_learning_rate must be > 0 when given, got {self.d_learning_rate}")
        if not 0 < self.collapse_threshold < 1:
            raise ConfigError(f"collapse_threshold must be in (0, 1), got {self.collapse_threshold}")
        self.arch  # noqa: B018 (validates the resolution and sizes now, naming the key)

    @property
    def augment_policy(self) -> tuple[str, ...]:
        """The DiffAugment policy as a tuple."""
        return tuple(p.strip() for p in self.diffaugment.split(",") if p.strip())

    @property
    def arch(self) -> GANArch:
        """The networks' shape."""
        return GANArch(kind=self.model, resolution=self.resolution, z_dim=self.z_dim, channels=self.gan_channels,
                       pose=self.conditioning == "pose")
