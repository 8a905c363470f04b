"""Sampling from unconditional and pose-conditioned UNets with fast solvers, image grids, and the options every
`toolkit.sample` command shares."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from PIL import Image
from tqdm.auto import tqdm

from toolkit.config import check_positive, option

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,  # DPM-Solver++(2M): the diffusers default algorithm_type
    "unipc": UniPCMultistepScheduler,
}


def make_scheduler(name: str, train_config: dict, pixel_space: bool = True):
    """A sampling scheduler `name` built from the training scheduler's config (same betas and prediction type).

    In pixel space the multistep solvers use dynamic thresholding (as diffusers recommends for DPM-Solver++ and
    UniPC on pixel-space models): without it, x0 estimates at high noise can leave [-1, 1] and the solver diverges.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}")
    overrides = {"thresholding": True, "sample_max_value": 1.0} if pixel_space and name in ("dpm", "unipc") else {}
    return SCHEDULERS[name].from_config(train_config, **overrides)


@torch.no_grad()
def denoise(unet: UNet2DModel, scheduler, noise: torch.Tensor, *, num_inference_steps: int,
            generator: torch.Generator, progress: bool = False,
            conditioning: torch.Tensor | None = None) -> torch.Tensor:
    """Run `scheduler` from `noise` (B, C, H, W) to images in [-1, 1]; `conditioning` (B, Cc, H, W) is concatenated
    to the model input at every step (pose-conditioned UNets)."""
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    # Only the stochastic solvers (DDPM, DDIM with eta) take a generator: pass it where `step` accepts one.
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    x = noise * scheduler.init_noise_sigma
    for t in tqdm(scheduler.timesteps, desc="sampling", leave=False, disable=not progress):
        model_in = scheduler.scale_model_input(x, t)
        if conditioning is not None:
            model_in = torch.cat([model_in, conditioning], dim=1)  # (B, C + Cc, H, W)
        x = scheduler.step(unet(model_in, t).sample, t, x, **extra).prev_sample
    return x


@torch.no_grad()
def generate(unet: UNet2DModel, scheduler, num_images: int, *, num_inference_steps: int, seed: int,
             batch_size: int = 16, resolution: int | None = None, progress: bool = False,
             conditioning: torch.Tensor | None = None) -> np.ndarray:
    """Sample `num_images` images as uint8 (N, H, W, 3); the same seed gives the same images.

    `conditioning` (N, Cc, H, W) in [-1, 1] gives image i its pose map (and the size); None for unconditional UNets.
    """
    size = conditioning.shape[-1] if conditioning is not None else (resolution or unet.config.sample_size)
    param = next(unet.parameters())
    chunks = []
    for start in range(0, num_images, batch_size):
        n = min(batch_size, num_images - start)
        generator = torch.Generator(device="cpu").manual_seed(seed + start)
        noise = torch.randn((n, unet.config.out_channels, size, size), generator=generator)
        cond = conditioning[start:start + n].to(param.device, param.dtype) if conditioning is not None else None
        x = denoise(unet, scheduler, noise.to(param.device, param.dtype), num_inference_steps=num_inference_steps,
                    generator=generator, progress=progress, conditioning=cond)
        images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [-1, 1] -> uint8
        chunks.append(images.permute(0, 2, 3, 1).cpu().numpy())  # (n, 3, H, W) -> (n, H, W, 3)
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


@dataclass
class ImageSampleConfig:
    """Options of every `python -m toolkit.sample` command: how many images, from which poses, seed, batch, where."""

    poses: str | None = option(None, "folder of OpenPose JSON (ddpm and gan: or pose-map images); one image per "
                                     "pose, named like the pose file")
    num_images: int = option(16, "how many images to generate (with --poses: at most this many poses, in order)")
    seed: int = option(0, "random seed; the same seed and batch size give the same images")
    batch_size: int = option(16, "images generated at once")
    output_dir: str | None = option(None, "where to write images and grid.png (default: PIPELINE/generated)")

    POSITIVE = ("num_images", "batch_size")

    def __post_init__(self) -> None:
        check_positive(self, self.POSITIVE)


@dataclass
class SampleConfig(ImageSampleConfig):
    """Options of the diffusion sample commands (`ddpm`, `controlnet`): a pipeline and its solver."""

    pipeline: str = option("runs/ddpm-figures", "the pipeline folder (or Hub id) to sample from")
    num_inference_steps: int = option(20, "solver steps (20 for dpm/unipc, 50 for ddim, 1000 for ddpm)")
    scheduler: Literal["dpm", "unipc", "ddim", "ddpm"] = option("dpm", "sampler")
    resolution: int | None = option(None, "output size; defaults to the training resolution")

    POSITIVE = ImageSampleConfig.POSITIVE + ("num_inference_steps",)


def save_samples(images: np.ndarray, names: list[str] | None, out: Path) -> str:
    """Write images (N, H, W, 3) uint8 as PNGs (named `names`, or 00000.png ...) and grid.png; a status line."""
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(out / f"{names[i] if names else f'{i:05d}'}.png")
    make_grid(images).save(out / "grid.png")
    return f"wrote {len(images)} images and {out / 'grid.png'}"
