"""The configuration of `train_pose_lora.py`: LoRA on the Stable Diffusion UNet under a frozen ControlNet-OpenPose.

Flag names follow diffusers' train_controlnet.py and train_text_to_image_lora.py where one exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from toolkit.config import ConfigError, option

LORA_LAYERS = {  # peft target modules of the UNet (and ControlNet) per --lora_layers
    "attn": ["to_q", "to_k", "to_v", "to_out.0"],
    "attn_ff": ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"],
    "all": ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1", "conv2",
            "conv_shortcut", "time_emb_proj"],
}


@dataclass
class PoseLoraConfig:
    """Options of `toolkit/train_pose_lora.py`."""

    # --- models
    pretrained_model_name_or_path: str | None = option(
        None, "Stable Diffusion pipeline: a Hub id (stable-diffusion-v1-5/stable-diffusion-v1-5) or a local folder")
    controlnet_model_name_or_path: str | None = option(
        None, "ControlNet-OpenPose (lllyasviel/control_v11p_sd15_openpose) or a local folder; none: initialise "
              "one from the UNet (then train it with --train_controlnet)")
    revision: str | None = option(None, "Hub revision of the pretrained model")
    variant: str | None = option(None, "weights variant of the pretrained model, e.g. fp16")
    # --- LoRA
    rank: int = option(16, "LoRA rank")
    lora_alpha: int | None = option(None, "LoRA alpha (scale = alpha / rank); default: the rank")
    lora_dropout: float = option(0.0, "dropout on the LoRA branch")
    lora_layers: Literal["attn", "attn_ff", "all"] = option(
        "attn", "where LoRA goes: attention projections; plus feed-forward; or also convs and projections")
    train_controlnet: Literal["no", "lora", "full"] = option("no", "also train the ControlNet: with LoRA, or all of it")
    # --- data
    train_data_dir: str | None = option(None, "a prepare_poses / toolkit.figures folder (images/, conditioning/, "
                                              "keypoints/, metadata.jsonl)")
    dataset_name: str | None = option(None, "a `datasets` name or local dataset path (instead of --train_data_dir)")
    image_column: str = option("image", "image column of --dataset_name")
    conditioning_image_column: str = option("conditioning_image", "pose-map column of --dataset_name")
    caption_column: str = option("text", "caption column")
    max_train_samples: int | None = option(None, "use only the first N examples")
    resolution: int = option(512, "training resolution in pixels (square; a multiple of 8)")
    center_crop: bool = option(True, "centre crop after resizing the short side; --no-center_crop crops randomly "
                                     "(one crop per image when latents are cached)")
    random_flip: bool = option(False, "horizontal flips, left/right aware: the pose map is re-drawn from mirrored "
                                      "keypoints (examples without keypoints are never flipped)")
    caption_template: str = option("{caption}, {pose_text}", "training caption from {caption} and {pose_text}")
    proportion_empty_prompts: float = option(0.0, "share of captions replaced by the empty prompt")
    shuffle_tags: bool = option(False, "shuffle comma-separated caption tags after the first --keep_tags")
    keep_tags: int = option(1, "tags kept in front when shuffling")
    cache_latents: bool = option(True, "encode every image with the VAE once (and its flip): epochs do no VAE work")
    cache_text_embeddings: bool = option(True, "encode every caption once: epochs do no text-encoder work")
    # --- loss
    prediction_type: Literal["epsilon", "v_prediction"] | None = option(
        None, "training target; default: the scheduler's")
    snr_gamma: float | None = option(None, "min-SNR loss weighting gamma (5 is the usual choice); none: off")
    noise_offset: float = option(0.0, "offset noise strength")
    pose_loss_weight: float = option(0.0, "pose-weighted loss at latent resolution: weight 1 + lambda x limb mask")
    # --- optimisation
    train_batch_size: int = option(1, "examples per device per optimiser step (before accumulation)")
    gradient_accumulation_steps: int = option(1, "micro-batches accumulated per optimiser step")
    max_train_steps: int = option(1000, "optimiser steps")
    learning_rate: float = option(1e-4, "AdamW learning rate")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = option("constant", "LR schedule")
    lr_warmup_steps: int = option(0, "linear warm-up steps")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_weight_decay: float = option(1e-2, "AdamW weight decay")
    adam_epsilon: float = option(1e-8, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    use_8bit_adam: bool = option(False, "bitsandbytes 8-bit AdamW (CUDA and bitsandbytes needed)")
    seed: int = option(0, "seed of every random draw")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = option(
        "auto", "frozen weights in this dtype, LoRA weights in fp32; auto: bf16 on native-bf16 CPUs, bf16/fp16 on CUDA")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    enable_xformers_memory_efficient_attention: bool = option(False, "xformers attention on CUDA (default: SDPA)")
    allow_tf32: bool = option(False, "TF32 matmuls on Ampere+ GPUs")
    num_cpu_threads: int | None = option(None, "CPU threads per process; default: all usable cores / processes")
    # --- validation
    validation_prompt: str = option("a photo of a person", "validation prompt; the pose phrase and the positive "
                                                           "structure preset are appended")
    validation_preset: list[str] = option(["anatomy"], "structure prompt presets for validation (toolkit.prompts)")
    validation_poses: str | None = option(None, "folder of OpenPose JSON files to validate on; default: the first "
                                                "training examples' keypoints")
    num_validation_images: int = option(4, "poses in each validation grid")
    validation_steps: int = option(100, "validate every N steps (and at the end)")
    num_inference_steps: int = option(20, "solver steps for validation")
    validation_scheduler: Literal["unipc", "dpm", "ddim"] = option("unipc", "validation solver")
    guidance_scale: float = option(7.5, "classifier-free guidance scale for validation")
    score_poses: bool = option(True, "detect the pose in validation images (MediaPipe) and log PCK and OKS-AP")
    keep_best_pose_checkpoint: bool = option(False, "also save the LoRA with the best validation PCK as lora_best/")
    # --- checkpoints and outputs
    output_dir: str = option("runs/pose-lora", "where the LoRA, samples, logs and checkpoints go")
    checkpointing_steps: int = option(500, "save a resumable checkpoint every N steps")
    checkpoints_total_limit: int | None = option(3, "keep at most N checkpoints")
    resume_from_checkpoint: str | None = option(None, "'latest' or a checkpoint folder")
    overwrite_output_dir: bool = option(False, "start fresh even if output_dir holds checkpoints of an earlier run")
    report_to: Literal["tensorboard", "wandb", "all", "none"] = option("tensorboard", "experiment tracker")
    logging_dir: str = option("logs", "tracker folder, relative to output_dir")
    # --- hub
    push_to_hub: bool = option(False, "upload the LoRA and model card (token from HF_TOKEN or `hf auth login`)")
    hub_model_id: str | None = option(None, "repository id, e.g. user/pose-lora")
    hub_private_repo: bool = option(False, "create the repository as private")
    hub_dry_run: bool = option(False, "write output_dir/hub_upload exactly as it would be uploaded; no network")
    hub_license: str = option("creativeml-openrail-m", "license in the model card (SD 1.5's)")

    def __post_init__(self) -> None:
        if not self.pretrained_model_name_or_path:
            raise ConfigError("pretrained_model_name_or_path is required: a Stable Diffusion folder or Hub id "
                              "(python -m toolkit.make_tiny_sd --output_dir tiny_sd writes a tiny offline one)")
        if self.train_data_dir and self.dataset_name:
            raise ConfigError("give either train_data_dir or dataset_name, not both")
        if not (self.train_data_dir or self.dataset_name):
            raise ConfigError("train_data_dir (a prepare_poses folder) or dataset_name is required")
        for key in ("rank", "resolution", "train_batch_size", "gradient_accumulation_steps", "max_train_steps",
                    "num_validation_images", "validation_steps", "num_inference_steps", "checkpointing_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.resolution % 8:
            raise ConfigError(f"resolution must be a multiple of 8, got {self.resolution}")
        if not 0.0 <= self.proportion_empty_prompts <= 1.0:
            raise ConfigError(f"proportion_empty_prompts must be in [0, 1], got {self.proportion_empty_prompts}")
        if self.pose_loss_weight < 0:
            raise ConfigError(f"pose_loss_weight must be >= 0, got {self.pose_loss_weight}")
        if self.shuffle_tags and self.cache_text_embeddings:
            raise ConfigError("shuffle_tags makes a new caption every step: pass --no-cache_text_embeddings with it")
        if (self.push_to_hub or self.hub_dry_run) and not self.hub_model_id:
            raise ConfigError("push_to_hub / hub_dry_run need hub_model_id (e.g. user/pose-lora)")

    @property
    def alpha(self) -> int:
        return self.lora_alpha or self.rank
