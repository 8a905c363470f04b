"""The configuration of `train_pose_lora.py`: LoRA on the Stable Diffusion UNet under a frozen ControlNet-OpenPose.

Flag names follow diffusers' train_controlnet.py and train_text_to_image_lora.py where one exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from toolkit.config import ConfigError, option, with_defaults
from toolkit.training.config import DiffusionConfig

LORA_LAYERS = {  # peft target modules of the UNet (and ControlNet) per --lora_layers
    "attn": ["to_q", "to_k", "to_v", "to_out.0"],
    "attn_ff": ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"],
    "all": ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1", "conv2",
            "conv_shortcut", "time_emb_proj"],
}


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter's shape: rank, alpha (scale = alpha / rank), dropout and the layers it goes on."""

    rank: int
    alpha: int
    dropout: float
    layers: Literal["attn", "attn_ff", "all"]


@dataclass
@with_defaults(train_batch_size=1, validation_steps=100, num_validation_images=4, checkpointing_steps=500,
               output_dir="runs/pose-lora", hub_license="creativeml-openrail-m", help={
                   "train_data_dir": "a prepare_poses / toolkit.figures folder (images/, conditioning/, keypoints/, "
                                     "metadata.jsonl)",
                   "resolution": "training resolution in pixels (square; a multiple of 8)",
                   "center_crop": "centre crop after resizing the short side; --no-center_crop crops randomly (one "
                                  "fixed crop per image, so that cached latents and pose maps agree)",
                   "random_flip": "horizontal flips, left/right aware: the pose map is re-drawn from mirrored "
                                  "keypoints (examples without keypoints are never flipped)",
                   "mixed_precision": "frozen weights in this dtype, LoRA weights in fp32; auto: bf16 on native-bf16 "
                                      "CPUs, bf16/fp16 on CUDA",
                   "pose_loss_weight": "pose-weighted loss at latent resolution: weight 1 + lambda x limb mask",
                   "num_validation_images": "poses in each validation grid",
                   "output_dir": "where the LoRA, samples, logs and checkpoints go",
                   "hub_model_id": "repository id, e.g. user/pose-lora",
                   "hub_license": "license in the model card (SD 1.5's)"})
class PoseLoraConfig(DiffusionConfig):
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
    caption_column: str = option("text", "caption column")
    caption_template: str = option("{caption}, {pose_text}", "training caption from {caption} and {pose_text}")
    proportion_empty_prompts: float = option(0.0, "share of captions replaced by the empty prompt")
    shuffle_tags: bool = option(False, "shuffle comma-separated caption tags after the first --keep_tags")
    keep_tags: int = option(1, "tags kept in front when shuffling")
    cache_latents: bool = option(True, "encode every image with the VAE once (and its flip): epochs do no VAE work")
    cache_text_embeddings: bool = option(True, "encode every caption once: epochs do no text-encoder work")
    # --- optimisation
    use_8bit_adam: bool = option(False, "bitsandbytes 8-bit AdamW (CUDA and bitsandbytes needed)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    # --- validation
    validation_prompt: str = option("a photo of a person", "validation prompt; the pose phrase and the positive "
                                                           "structure preset are appended")
    validation_preset: list[str] = option(["anatomy"], "structure prompt presets for validation (toolkit.prompts)")
    validation_poses: str | None = option(None, "folder of OpenPose JSON files to validate on; default: the first "
                                                "training examples' keypoints")
    guidance_scale: float = option(7.5, "classifier-free guidance scale for validation")
    score_poses: bool = option(True, "detect the pose in validation images (MediaPipe) and log PCK and OKS-AP")
    keep_best_pose_checkpoint: bool = option(False, "also save the LoRA with the best validation PCK as lora_best/")

    POSITIVE = DiffusionConfig.POSITIVE + ("rank",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ssim_loss_weight or self.lpips_loss_weight:
            raise ConfigError("ssim_loss_weight and lpips_loss_weight are train_unet.py's: the LoRA trainer's x0 is a "
                              "latent, and decoding it through the VAE every step is not measured yet")
        if not self.pretrained_model_name_or_path:
            raise ConfigError("pretrained_model_name_or_path is required: a Stable Diffusion folder or Hub id "
                              "(python -m toolkit.make_tiny_sd --output_dir tiny_sd writes a tiny offline one)")
        if not (self.train_data_dir or self.dataset_name):
            raise ConfigError("train_data_dir (a prepare_poses folder) or dataset_name is required")
        if self.resolution % 8:
            raise ConfigError(f"resolution must be a multiple of 8, got {self.resolution}")
        if not 0.0 <= self.proportion_empty_prompts <= 1.0:
            raise ConfigError(f"proportion_empty_prompts must be in [0, 1], got {self.proportion_empty_prompts}")
        if self.shuffle_tags and self.cache_text_embeddings:
            raise ConfigError("shuffle_tags makes a new caption every step: pass --no-cache_text_embeddings with it")

    @property
    def adapter(self) -> AdapterSpec:
        """The LoRA adapter's shape (alpha defaults to the rank)."""
        return AdapterSpec(self.rank, self.lora_alpha or self.rank, self.lora_dropout, self.lora_layers)
