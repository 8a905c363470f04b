"""The models of pose-LoRA training: SD's tokenizer, text encoder, VAE and UNet, a ControlNet, and the LoRA adapters.

Everything frozen sits in the mixed-precision dtype; the trainable LoRA weights (and a fully trained ControlNet)
stay fp32 (diffusers' `cast_training_params`), which is what keeps fp16 LoRA training stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from peft import LoraConfig

from toolkit.errors import UserError
from toolkit.lora.config import LORA_LAYERS, PoseLoraConfig


@dataclass
class Models:
    """The loaded components; `unet` (and `controlnet` when trained) carry the LoRA adapters."""

    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    controlnet: torch.nn.Module
    noise_scheduler: object

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _load(cls, path: str, subfolder: str | None, cfg: PoseLoraConfig, **kwargs):
    """`cls.from_pretrained` with the revision and variant; a missing folder or file is a one-line error."""
    try:
        return cls.from_pretrained(path, subfolder=subfolder, revision=cfg.revision, **kwargs)
    except (OSError, ValueError) as e:
        where = f"{path}/{subfolder}" if subfolder else path
        raise UserError(f"could not load {cls.__name__} from {where}: {str(e).splitlines()[0]}") from None


def controlnet_from_unet(unet, vae_scale_factor: int):
    """A ControlNet initialised from the UNet, its conditioning embedding downsampling as much as the VAE does."""
    from diffusers import ControlNetModel

    stages = int(math.log2(vae_scale_factor)) + 1  # each stage after the first halves the resolution
    channels = (16, 32, 96, 256)[:stages] if stages <= 4 else (16, 32, 96, 256) + (256,) * (stages - 4)
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)


def load_models(cfg: PoseLoraConfig) -> Models:
    """Load SD's components and the ControlNet (or make one from the UNet), all frozen, in fp32."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path, variant = cfg.pretrained_model_name_or_path, {"variant": cfg.variant} if cfg.variant else {}
    tokenizer = _load(CLIPTokenizer, path, "tokenizer", cfg)
    if tokenizer.model_max_length > 1_000_000:  # saved without its config: CLIP's window is 77
        tokenizer.model_max_length = 77
    noise_scheduler = _load(DDPMScheduler, path, "scheduler", cfg)
    if cfg.prediction_type:
        noise_scheduler.register_to_config(prediction_type=cfg.prediction_type)
    text_encoder = _load(CLIPTextModel, path, "text_encoder", cfg, **variant)
    vae = _load(AutoencoderKL, path, "vae", cfg, **variant)
    unet = _load(UNet2DConditionModel, path, "unet", cfg, **variant)
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if cfg.controlnet_model_name_or_path:
        controlnet = _load(ControlNetModel, cfg.controlnet_model_name_or_path, None, cfg)
    else:
        controlnet = controlnet_from_unet(unet, vae_factor)
    for module in (text_encoder, vae, unet, controlnet):
        module.requires_grad_(False)
        module.eval()
    return Models(tokenizer, text_encoder, vae, unet, controlnet, noise_scheduler)


def lora_config(cfg: PoseLoraConfig) -> LoraConfig:
    """The peft LoRA configuration of --rank, --lora_alpha, --lora_dropout and --lora_layers."""
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.lora_dropout, init_lora_weights="gaussian",
                      target_modules=LORA_LAYERS[cfg.lora_layers])


def add_adapters(cfg: PoseLoraConfig, models: Models) -> list[torch.nn.Parameter]:
    """Put LoRA on the UNet (and on or into the ControlNet per --train_controlnet); returns the trainable params."""
    models.unet.add_adapter(lora_config(cfg))
    if cfg.train_controlnet == "lora":
        models.controlnet.add_adapter(lora_config(cfg))
    elif cfg.train_controlnet == "full":
        models.controlnet.requires_grad_(True)
        models.controlnet.train()
    models.unet.train()  # LoRA dropout on; the frozen base has no dropout
    return [p for m in (models.unet, models.controlnet) for p in m.parameters() if p.requires_grad]


def place(models: Models, cfg: PoseLoraConfig, device: torch.device, weight_dtype: torch.dtype) -> None:
    """Move to the device: frozen weights in `weight_dtype`, trainable ones back to fp32."""
    from diffusers.training_utils import cast_training_params

    for module in (models.text_encoder, models.vae, models.unet, models.controlnet):
        module.to(device)
        if weight_dtype != torch.float32:
            module.to(dtype=weight_dtype)
    if cfg.train_controlnet == "full":
        models.controlnet.to(dtype=torch.float32)
    if weight_dtype != torch.float32:
        cast_training_params([models.unet, models.controlnet], dtype=torch.float32)


def enable_speedups(cfg: PoseLoraConfig, models: Models, device: torch.device, say) -> None:
    """Gradient checkpointing and the attention backend (SDPA by default, xformers when asked and available)."""
    if cfg.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        models.controlnet.enable_gradient_checkpointing()
    if cfg.enable_xformers_memory_efficient_attention:
        from diffusers.utils.import_utils import is_xformers_available

        if device.type == "cuda" and is_xformers_available():
            models.unet.enable_xformers_memory_efficient_attention()
            models.controlnet.enable_xformers_memory_efficient_attention()
        else:
            say("xformers needs CUDA and `pip install xformers`: using PyTorch SDPA attention instead")
    if cfg.allow_tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True


def make_optimizer(cfg: PoseLoraConfig, params: list[torch.nn.Parameter], device: torch.device, say):
    """AdamW, or bitsandbytes' 8-bit AdamW when asked and possible."""
    if cfg.use_8bit_adam:
        try:
            import bitsandbytes as bnb

            if device.type != "cuda":
                raise ImportError("needs CUDA")
            return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                       weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
        except ImportError as e:
            say(f"--use_8bit_adam: bitsandbytes unavailable ({e}); using torch AdamW")
    return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
