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
from toolkit.lora.config import LORA_LAYERS, AdapterSpec, PoseLoraConfig
from toolkit.training.runs import enable_xformers


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


def _load(cls, path: str, subfolder: str | None, *, revision: str | None, **kwargs):
    """`cls.from_pretrained` with a revision (and variant); a missing folder or file is a one-line error."""
    try:
        return cls.from_pretrained(path, subfolder=subfolder, revision=revision, **kwargs)
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

    path, revision = cfg.pretrained_model_name_or_path, cfg.revision
    variant = {"variant": cfg.variant} if cfg.variant else {}
    tokenizer = _load(CLIPTokenizer, path, "tokenizer", revision=revision)
    if tokenizer.model_max_length > 1_000_000:  # saved without its config: CLIP's window is 77
        tokenizer.model_max_length = 77
    noise_scheduler = _load(DDPMScheduler, path, "scheduler", revision=revision)
    if cfg.prediction_type:
        noise_scheduler.register_to_config(prediction_type=cfg.prediction_type)
    text_encoder = _load(CLIPTextModel, path, "text_encoder", revision=revision, **variant)
    vae = _load(AutoencoderKL, path, "vae", revision=revision, **variant)
    unet = _load(UNet2DConditionModel, path, "unet", revision=revision, **variant)
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if cfg.controlnet_model_name_or_path:
        controlnet = _load(ControlNetModel, cfg.controlnet_model_name_or_path, None, revision=None)
    else:
        controlnet = controlnet_from_unet(unet, vae_factor)
    for module in (text_encoder, vae, unet, controlnet):
        module.requires_grad_(False)
        module.eval()
    return Models(tokenizer, text_encoder, vae, unet, controlnet, noise_scheduler)


def lora_config(spec: AdapterSpec) -> LoraConfig:
    """The peft LoRA configuration of an adapter's rank, alpha, dropout and layers."""
    return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, init_lora_weights="gaussian",
                      target_modules=LORA_LAYERS[spec.layers])


def add_adapters(models: Models, spec: AdapterSpec, *, train_controlnet: str) -> list[torch.nn.Parameter]:
    """Put LoRA on the UNet (and on or into the ControlNet per `train_controlnet`); returns the trainable params."""
    models.unet.add_adapter(lora_config(spec))
    if train_controlnet == "lora":
        models.controlnet.add_adapter(lora_config(spec))
    elif train_controlnet == "full":
        models.controlnet.requires_grad_(True)
        models.controlnet.train()
    models.unet.train()  # LoRA dropout on; the frozen base has no dropout
    return [p for m in (models.unet, models.controlnet) for p in m.parameters() if p.requires_grad]


def place(models: Models, device: torch.device, weight_dtype: torch.dtype, *, full_controlnet: bool) -> None:
    """Move to the device: frozen weights in `weight_dtype`, trainable ones (LoRA, a fully trained ControlNet)
    back to fp32."""
    from diffusers.training_utils import cast_training_params

    for module in (models.text_encoder, models.vae, models.unet, models.controlnet):
        module.to(device)
        if weight_dtype != torch.float32:
            module.to(dtype=weight_dtype)
    if full_controlnet:
        models.controlnet.to(dtype=torch.float32)
    if weight_dtype != torch.float32:
        cast_training_params([models.unet, models.controlnet], dtype=torch.float32)


def enable_speedups(models: Models, device: torch.device, say, *, gradient_checkpointing: bool,
                    xformers: bool) -> None:
    """Gradient checkpointing and the attention backend (SDPA by default, xformers when asked and available)."""
    if gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        models.controlnet.enable_gradient_checkpointing()
    if xformers:
        enable_xformers([models.unet, models.controlnet], device, say)
