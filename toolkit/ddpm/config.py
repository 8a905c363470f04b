"""The configuration of `train_unet.py`: every flag, its default and its validation in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from toolkit.config import ConfigError, option

DEFAULT_TRAIN_STEPS = 1000  # when neither max_train_steps nor num_epochs is given


@dataclass
class Stage:
    """One stage of progressive-resolution training; later stages continue the same weights."""

    resolution: int
    steps: int
    train_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.steps < 1:
            raise ConfigError(f"stages: resolution must be >= 8 and steps >= 1, got {self}")


@dataclass
class TrainUNetConfig:
    """Options of `toolkit/train_unet.py`; names follow diffusers' train_unconditional.py where one exists."""

    # --- data
    train_data_dir: str | None = option(None, "folder of images (searched recursively) or an imagefolder with metadata.jsonl")
    dataset_name: str | None = option(None, "a `datasets` name or local dataset path (instead of --train_data_dir)")
    dataset_config_name: str | None = option(None, "the dataset's config name, if it has several")
    image_column: str = option("image", "the image column of --dataset_name")
    conditioning_image_column: str = option("conditioning_image", "the pose-map column of --dataset_name")
    max_train_samples: int | None = option(None, "use only the first N images (debugging, quick runs)")
    num_figures: int = option(2000, "size of the built-in synthetic figures dataset used when no data is given; "
                                    "with --cache_images never they are rendered on the fly, so 10000000 is endless")
    resolution: int = option(32, "training resolution in pixels (square)")
    center_crop: bool = option(True, "center crop after resizing the short side; --no-center_crop crops randomly")
    random_flip: bool = option(True, "random horizontal flip")
    cache_images: Literal["auto", "always", "never"] = option(
        "auto", "decode once and keep images in memory as uint8; auto does so when they fit in 4 GB")
    dataloader_num_workers: int = option(0, "decoding workers when images are not cached in memory")
    # --- model and diffusion
    model_preset: Literal["tiny", "small", "medium", "ddpm"] = option(
        "small", "UNet2DModel size: tiny (tests), small (CPU), medium (25 M), ddpm (the diffusers example's)")
    model_config_name_or_path: str | None = option(None, "a UNet2DModel config.json (or folder) overriding the preset")
    dropout: float = option(0.0, "dropout in the UNet's resnet blocks")
    conditioning: Literal["none", "pose"] = option(
        "none", "pose: condition on OpenPose maps, concatenated to the UNet input as 3 channels (figures, or a "
                "prepare_poses / toolkit.figures folder, or --conditioning_image_column); random flips are off")
    pose_loss_weight: float = option(
        0.0, "pose-weighted loss: pixel weight 1 + lambda x limb mask from the pose map (Stable-Pose: 4, i.e. 5 "
             "inside); 0: off")
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = option("epsilon", "what the UNet predicts")
    ddpm_num_steps: int = option(1000, "diffusion steps of the training noise schedule")
    ddpm_beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = option(
        "linear", "beta schedule of the DDPMScheduler")
    snr_gamma: float | None = option(5.0, "min-SNR loss weighting gamma (Hang et al. 2023; faster convergence); none: off")
    noise_offset: float = option(0.0, "offset noise strength (0.05-0.1 helps very dark or bright images)")
    # --- optimisation
    train_batch_size: int = option(16, "images per device per optimiser step (before accumulation)")
    gradient_accumulation_steps: int = option(1, "micro-batches accumulated per optimiser step")
    max_train_steps: int | None = option(None, "optimiser steps; wins over --num_epochs (default 1000 if neither)")
    num_epochs: int | None = option(None, "passes over the data, used when --max_train_steps is not given")
    stages: list[Stage] = option([], "progressive resolution: a list of {resolution, steps, train_batch_size}",
                                 cli=False)
    learning_rate: float = option(1e-3, "peak learning rate of AdamW (1e-3 suits the small preset; 1e-4 larger ones)")
    lr_scheduler: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                          "constant_with_warmup"] = option("cosine", "learning-rate schedule (diffusers get_scheduler)")
    lr_warmup_steps: int = option(100, "linear warm-up steps")
    adam_beta1: float = option(0.95, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_weight_decay: float = option(1e-6, "AdamW weight decay")
    adam_epsilon: float = option(1e-8, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 disables clipping)")
    use_ema: bool = option(True, "keep an EMA of the weights; used for validation and the saved pipeline")
    ema_max_decay: float = option(0.9999, "EMA maximum decay")
    ema_inv_gamma: float = option(1.0, "EMA warm-up inv_gamma")
    ema_power: float = option(0.75, "EMA warm-up power (3/4 suits short runs, 2/3 long ones)")
    seed: int = option(0, "seed of every random draw: the same seed gives the same run")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = option(
        "auto", "auto: bf16 on CPUs with native bf16, bf16/fp16 on CUDA; the choice is printed with its reason")
    enable_xformers_memory_efficient_attention: bool = option(False, "xformers attention on CUDA when installed")
    allow_tf32: bool = option(False, "allow TF32 matmuls on Ampere+ GPUs")
    num_cpu_threads: int | None = option(
        None, "CPU threads per process; default: all usable cores / processes (accelerate launch would use 1)")
    # --- validation
    validation_steps: int = option(250, "make a sample grid every N steps (and at the end)")
    num_validation_images: int = option(16, "images in each validation grid")
    validation_scheduler: Literal["dpm", "unipc", "ddim", "ddpm"] = option("dpm", "sampler for validation")
    num_inference_steps: int = option(20, "sampler steps for validation")
    # --- checkpoints and outputs
    output_dir: str = option("runs/ddpm-figures", "where the pipeline, samples, logs and checkpoints go")
    checkpointing_steps: int = option(250, "save a resumable checkpoint every N steps")
    checkpoints_total_limit: int | None = option(3, "keep at most N checkpoints (oldest removed)")
    resume_from_checkpoint: str | None = option(None, "'latest' or a checkpoint folder to continue from")
    overwrite_output_dir: bool = option(False, "start fresh even if output_dir holds checkpoints of an earlier run")
    report_to: Literal["tensorboard", "wandb", "all", "none"] = option("tensorboard", "experiment tracker")
    logging_dir: str = option("logs", "tracker folder, relative to output_dir")
    # --- hub
    push_to_hub: bool = option(False, "upload the pipeline and model card (token from HF_TOKEN or `hf auth login`)")
    hub_model_id: str | None = option(None, "repository id, e.g. user/ddpm-portraits")
    hub_private_repo: bool = option(False, "create the Hub repository as private")
    hub_dry_run: bool = option(False, "write output_dir/hub_upload exactly as it would be uploaded; no network")
    hub_license: str = option("apache-2.0", "license in the model card metadata")

    def __post_init__(self) -> None:
        if self.train_data_dir and self.dataset_name:
            raise ConfigError("give either train_data_dir or dataset_name, not both")
        positive = ["resolution", "train_batch_size", "gradient_accumulation_steps", "ddpm_num_steps",
                    "validation_steps", "num_validation_images", "num_inference_steps", "checkpointing_steps",
                    "num_figures"]
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_train_steps", "num_epochs", "max_train_samples", "checkpoints_total_limit"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be >= 1 when given, got {value}")
        if self.pose_loss_weight < 0:
            raise ConfigError(f"pose_loss_weight must be >= 0, got {self.pose_loss_weight}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if (self.push_to_hub or self.hub_dry_run) and not self.hub_model_id:
            raise ConfigError("push_to_hub / hub_dry_run need hub_model_id (e.g. user/ddpm-portraits)")

    @property
    def uses_pose_maps(self) -> bool:
        """Whether training reads pose maps: to condition on them, or to weight the loss with them."""
        return self.conditioning == "pose" or self.pose_loss_weight > 0
