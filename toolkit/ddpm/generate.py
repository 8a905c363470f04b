"""`python -m toolkit.sample ddpm`: images from a train_unet.py pipeline, unconditional or from given poses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toolkit.config import with_defaults
from toolkit.ddpm.pipeline import PoseDDPMPipeline, pose_tensor
from toolkit.errors import UserError
from toolkit.images import IMAGE_EXTENSIONS, load_rgb
from toolkit.pose import load_pose, pose_map
from toolkit.sampling import SampleConfig, generate, make_grid, make_scheduler


@dataclass
@with_defaults(scheduler="ddim", num_inference_steps=25,
               help={"scheduler": "sampler (DDIM: the best KID per network evaluation on these pixel-space models, "
                                  "docs/time_to_quality.md)"})
class DDPMSampleConfig(SampleConfig):
    """Options of `python -m toolkit.sample ddpm`: --pipeline is a train_unet.py output folder."""


def load_pipeline(path: str):
    """DDPMPipeline or PoseDDPMPipeline .from_pretrained(path), with a clear error when it is not a pipeline."""
    from diffusers import DDPMPipeline

    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise UserError(f"{path} is not a saved pipeline (no model_index.json)")
    kind = json.loads(index.read_text()).get("_class_name")
    return (PoseDDPMPipeline if kind == "PoseDDPMPipeline" else DDPMPipeline).from_pretrained(path)


def read_poses(folder: str, resolution: int, limit: int) -> tuple[list[str], torch.Tensor]:
    """(names, maps (N, 3, R, R) in [-1, 1]) from OpenPose JSON (fitted and drawn at `resolution`, as in
    training) or pose-map images."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"poses folder not found: {folder}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS | {".json"})[:limit]
    if not files:
        raise UserError(f"no OpenPose JSON or pose-map images in {folder}")
    maps = [pose_map(load_pose(f), resolution) if f.suffix.lower() == ".json" else np.asarray(load_rgb(f))
            for f in files]
    return [f.stem for f in files], pose_tensor(maps, resolution)


def sample_ddpm(cfg: DDPMSampleConfig) -> str:
    """Load the pipeline, swap in the chosen solver, generate, and save the images and a grid; returns a status."""
    pipe = load_pipeline(cfg.pipeline)
    conditioned = pipe.unet.config.in_channels > pipe.unet.config.out_channels
    if conditioned != (cfg.poses is not None):
        need = "pose-conditioned: pass --poses" if conditioned else "unconditional: drop --poses"
        raise UserError(f"{cfg.pipeline} is {need}")
    resolution = cfg.resolution or pipe.unet.config.sample_size
    names, maps = read_poses(cfg.poses, resolution, cfg.num_images) if conditioned else (None, None)
    count = len(names) if names else cfg.num_images
    scheduler = make_scheduler(cfg.scheduler, pipe.scheduler.config)
    images = generate(pipe.unet, scheduler, count, num_inference_steps=cfg.num_inference_steps, seed=cfg.seed,
                      batch_size=cfg.batch_size, resolution=resolution, progress=True,
                      conditioning=maps)  # (N, H, W, 3) uint8
    out = Path(cfg.output_dir or Path(cfg.pipeline) / "generated")
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(out / f"{names[i] if names else f'{i:05d}'}.png")
    make_grid(images).save(out / "grid.png")
    return f"wrote {len(images)} images and {out / 'grid.png'}"
