"""Tiny random Stable Diffusion + ControlNet-OpenPose folders, for offline tests and CPU dry runs of the LoRA path.

The architecture is SD 1.x's (UNet2DConditionModel with cross-attention, AutoencoderKL, CLIP text encoder with the
real SD tokenizer, a ControlNetModel matching the UNet) at a size that trains in seconds on a CPU. The VAE has two
blocks, so it downsamples 2x instead of 8x; the ControlNet's conditioning embedding therefore has two stages
(`conditioning_embedding_out_channels`), so that the pose map lands at latent resolution.
"""

from __future__ import annotations

from pathlib import Path

import torch

from toolkit.prompts.tokenizer import load_tokenizer

CHANNELS = (32, 64)
CROSS_ATTENTION_DIM = 32
DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D")
SD_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                "clip_sample": False, "steps_offset": 1, "prediction_type": "epsilon"}


def tiny_unet(sample_size: int = 32):
    """A two-level UNet2DConditionModel (about 1.6 M parameters)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(block_out_channels=CHANNELS, layers_per_block=1, sample_size=sample_size,
                                in_channels=4, out_channels=4, down_block_types=DOWN_BLOCKS, up_block_types=UP_BLOCKS,
                                cross_attention_dim=CROSS_ATTENTION_DIM, attention_head_dim=8, norm_num_groups=8)


def tiny_controlnet(unet=None):
    """A ControlNetModel with the tiny UNet's blocks; from the UNet's weights when one is given."""
    from diffusers import ControlNetModel

    embedding = (16, 32)  # two stages: a 2x downsampling, as the tiny VAE's
    if unet is not None:
        return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding)
    return ControlNetModel(block_out_channels=CHANNELS, layers_per_block=1, in_channels=4,
                           down_block_types=DOWN_BLOCKS, cross_attention_dim=CROSS_ATTENTION_DIM, attention_head_dim=8,
                           norm_num_groups=8, conditioning_embedding_out_channels=embedding)


def tiny_vae():
    """A two-block AutoencoderKL: 3 -> 4 channels, 2x downsampling."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=CHANNELS, in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8, sample_size=64)


def tiny_text_encoder():
    """A two-layer CLIP text encoder over the full SD vocabulary (so the real tokenizer works)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=CROSS_ATTENTION_DIM, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))


def make_tiny_sd(output_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write `output_dir/sd` (a StableDiffusionPipeline folder) and `output_dir/controlnet` (a ControlNetModel)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    out = Path(output_dir)
    torch.manual_seed(seed)
    unet = tiny_unet()
    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=tiny_text_encoder(), tokenizer=load_tokenizer(),
                                   unet=unet, scheduler=DDPMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out / "sd")
    torch.manual_seed(seed + 1)
    tiny_controlnet().save_pretrained(out / "controlnet")
    return out / "sd", out / "controlnet"
