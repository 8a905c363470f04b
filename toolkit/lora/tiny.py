"""Tiny random Stable Diffusion + ControlNet-OpenPose folders, for offline tests and CPU dry runs of the LoRA path.

The architecture is SD 1.x's (UNet2DConditionModel with cross-attention, AutoencoderKL, CLIP text encoder with the
real SD tokenizer, a ControlNetModel matching the UNet) at a size that trains in seconds on a CPU. The tiny VAE has
two blocks, so it downsamples 2x instead of 8x; the ControlNet's conditioning embedding therefore has two stages
(`conditioning_embedding_out_channels`), so that the pose map lands at latent resolution. `SMALL` keeps SD 1.5's
layout (four levels, 8x VAE) at a quarter of its widths, for CPU benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from toolkit.prompts.tokenizer import load_tokenizer

SD_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                "clip_sample": False, "steps_offset": 1, "prediction_type": "epsilon"}


@dataclass(frozen=True)
class SDSize:
    """Widths and depths of a random SD-like model."""

    unet_channels: tuple[int, ...]
    down_blocks: tuple[str, ...]
    up_blocks: tuple[str, ...]
    layers_per_block: int
    cross_attention_dim: int
    vae_channels: tuple[int, ...]
    text_layers: int
    text_heads: int
    norm_groups: int


TINY = SDSize((32, 64), ("CrossAttnDownBlock2D", "DownBlock2D"), ("UpBlock2D", "CrossAttnUpBlock2D"), 1, 32,
              (32, 64), 2, 4, 8)
SMALL = SDSize((80, 160, 320, 320), ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
               ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, 2, 192, (32, 64, 128, 128), 6, 4, 16)


def sd_unet(size: SDSize = TINY, sample_size: int = 32):
    """A UNet2DConditionModel of `size`."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(block_out_channels=size.unet_channels, layers_per_block=size.layers_per_block,
                                sample_size=sample_size, in_channels=4, out_channels=4,
                                down_block_types=size.down_blocks, up_block_types=size.up_blocks,
                                cross_attention_dim=size.cross_attention_dim, attention_head_dim=8,
                                norm_num_groups=size.norm_groups)


def sd_vae(size: SDSize = TINY):
    """An AutoencoderKL of `size`: 3 -> 4 channels, downsampling 2 ** (blocks - 1)."""
    from diffusers import AutoencoderKL

    blocks = len(size.vae_channels)
    return AutoencoderKL(block_out_channels=size.vae_channels, in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                         layers_per_block=1 if size is TINY else 2, norm_num_groups=size.norm_groups)


def sd_text_encoder(size: SDSize = TINY):
    """A CLIP text encoder over the full SD vocabulary (so the real tokenizer works)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=size.cross_attention_dim,
                                        intermediate_size=37 if size is TINY else 4 * size.cross_attention_dim,
                                        num_attention_heads=size.text_heads, num_hidden_layers=size.text_layers,
                                        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                                        pad_token_id=49407))


def make_tiny_sd(output_dir: str | Path, seed: int = 0, size: SDSize = TINY) -> tuple[Path, Path]:
    """Write `output_dir/sd` (a StableDiffusionPipeline folder) and `output_dir/controlnet` (a ControlNetModel with
    the UNet's blocks and its own random weights)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from toolkit.lora.models import controlnet_from_unet

    out = Path(output_dir)
    torch.manual_seed(seed)
    unet, vae = sd_unet(size), sd_vae(size)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=sd_text_encoder(size), tokenizer=load_tokenizer(),
                                   unet=unet, scheduler=DDPMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out / "sd")
    torch.manual_seed(seed + 1)
    controlnet = controlnet_from_unet(sd_unet(size), 2 ** (len(size.vae_channels) - 1))
    controlnet.save_pretrained(out / "controlnet")
    return out / "sd", out / "controlnet"
