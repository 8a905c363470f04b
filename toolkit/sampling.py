"""Sampling from unconditional UNets with fast solvers, and image grids."""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from PIL import Image

# Solvers whose initial noise scale is 1, so DDPMPipeline's loop drives them unchanged.
SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,  # DPM-Solver++(2M): the diffusers default algorithm_type
    "unipc": UniPCMultistepScheduler,
}


def make_scheduler(name: str, train_config: dict):
    """A sampling scheduler `name` built from the training scheduler's config (same betas and prediction type)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}")
    return SCHEDULERS[name].from_config(train_config)


@torch.no_grad()
def generate(unet: UNet2DModel, scheduler, num_images: int, num_inference_steps: int, seed: int,
             batch_size: int = 16, resolution: int | None = None, progress: bool = False) -> np.ndarray:
    """Sample `num_images` images as uint8 (N, H, W, 3); the same seed gives the same images."""
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=not progress)
    if resolution is not None and resolution != unet.config.sample_size:
        unet.register_to_config(sample_size=resolution)
    chunks = []
    for start in range(0, num_images, batch_size):
        n = min(batch_size, num_images - start)
        generator = torch.Generator(device="cpu").manual_seed(seed + start)
        out = pipe(batch_size=n, generator=generator, num_inference_steps=num_inference_steps, output_type="np")
        chunks.append((out.images * 255).round().astype(np.uint8))  # (n, H, W, 3) in [0, 1] -> uint8
    return np.concatenate(chunks)


def make_grid(images: np.ndarray | list[Image.Image], cols: int | None = None, pad: int = 2) -> Image.Image:
    """Tile images (uint8 (N, H, W, 3) or PIL images of one size) into a near-square grid on a white background."""
    arrays = [np.asarray(im.convert("RGB")) if isinstance(im, Image.Image) else im for im in images]
    n, (h, w) = len(arrays), arrays[0].shape[:2]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i, arr in enumerate(arrays):
        grid.paste(Image.fromarray(arr), (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return grid
