"""The configuration of `train_unet.py`: the shared diffusion options with this trainer's defaults, plus its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from toolkit.config import ConfigError, option, with_defaults
from toolkit.training.budget import PLAN_AFTER
from toolkit.training.config import DiffusionConfig, ScratchImageConfig


@dataclass
class Stage:
    """One stage of progressive-resolution training; later stages continue the same weights."""

    resolution: int
    steps: int
    train_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.steps < 1:
            raise ConfigError(f"stages: resolution must be >= 8 and steps >= 1, got {self}")


# x0-prediction without min-SNR weights the denoised error alike at every noise level, so a short run learns layout
# (high noise) as well as texture: KID 0.32 against 0.49 for epsilon with min-SNR after 10 minutes on faces. The
# no-argument run draws pose-conditioned figures at 48 px, the smallest size the anatomy parser can judge
# (docs/time_to_quality.md). Conditioning follows the data: pose for the built-in figures and pose folders.
@dataclass
@with_defaults(resolution=48, learning_rate=1e-3, lr_scheduler="cosine", lr_warmup_steps=100,
               adam_beta1=0.95, adam_weight_decay=1e-6, prediction_type="sample", snr_gamma=None,
               conditioning="auto", validation_scheduler="ddim", num_inference_steps=25,
               output_dir="runs/ddpm-figures", help={
                   "max_train_steps": "optimiser steps; wins over --num_epochs (default 800 if neither: about 9 "
                                      "minutes of the built-in figures on 2 CPU cores)",
                   "validation_scheduler": "validation solver (DDIM: the best KID per network evaluation measured on "
                                           "the figures and the faces, docs/time_to_quality.md)",
                   "train_data_dir": "folder of images (searched recursively) or an imagefolder with metadata.jsonl; "
                                     "with pose maps, a prepare_poses / toolkit.figures folder",
                   "random_flip": "random horizontal flip; pose maps are redrawn from the mirrored keypoints, left and "
                                  "right swapped for photos (off by default: on the figures flips cost 0.14 in distortion "
                                  "rate at 10 minutes, on faces they made no difference; docs/augmentation.md)",
                   "learning_rate": "peak learning rate of AdamW (1e-3 suits the small preset; 1e-4 larger ones)",
                   "output_dir": "where the pipeline, samples, logs and checkpoints go",
                   "hub_model_id": "repository id, e.g. user/ddpm-portraits",
                   "conditioning": "pose: condition on OpenPose maps, concatenated to the UNet input as 3 channels "
                                   "(figures, or a prepare_poses / toolkit.figures folder, or "
                                   "--conditioning_image_column); auto: pose when the data has poses (the "
                                   "built-in figures or a pose folder), none otherwise; the run's config.yaml "
                                   "records which"})
class TrainUNetConfig(DiffusionConfig, ScratchImageConfig):
    """Options of `toolkit/train_unet.py`; names follow diffusers' train_unconditional.py where one exists."""

    DEFAULT_TRAIN_STEPS = 800

    # --- model and diffusion
    model_preset: Literal["tiny", "small", "medium", "ddpm"] = option(
        "small", "UNet2DModel size: tiny (tests), small (CPU), medium (25 M), ddpm (the diffusers example's)")
    model_config_name_or_path: str | None = option(None, "a UNet2DModel config.json (or folder) overriding the preset")
    dropout: float = option(0.0, "dropout in the UNet's resnet blocks")
    augment_conditioning: bool = option(
        True, "with zoom, rotation, shift or colour augmentation: tell the UNet what was applied (added to its time "
              "embedding in training, zero when sampling) so samples are not augmented (EDM's non-leaking "
              "augmentation); the saved UNet stays a stock one")
    ddpm_num_steps: int = option(1000, "diffusion steps of the training noise schedule")
    ddpm_beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = option(
        "linear", "beta schedule of the DDPMScheduler")
    # --- optimisation
    stages: list[Stage] = option([], "progressive resolution: a list of {resolution, steps, train_batch_size}; "
                                     "under --max_train_time the steps are shares of the planned length",
                                 cli=False)

    POSITIVE = tuple(dict.fromkeys(DiffusionConfig.POSITIVE + ScratchImageConfig.POSITIVE + ("ddpm_num_steps",)))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_train_time and self.stages and self.stages[0].steps <= PLAN_AFTER:
            raise ConfigError(f"stages: with max_train_time the steps are shares, but the first stage must have more "
                              f"than {PLAN_AFTER} steps (the budget's plan is made after {PLAN_AFTER}), got "
                              f"{self.stages[0].steps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def uses_pose_maps(self) -> bool:
        """Whether training reads pose maps: to condition on them, or to weight the loss with them."""
        return self.conditioning == "pose" or self.pose_loss_weight > 0
