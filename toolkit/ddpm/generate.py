"""`python -m toolkit.sample ddpm`: images from a train_unet.py pipeline, unconditional or from given poses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from toolkit.config import with_defaults
from toolkit.data.folders import read_poses
from toolkit.ddpm.pipeline import PoseDDPMPipeline
from toolkit.errors import UserError
from toolkit.sampling import SampleConfig, generate, make_scheduler, save_samples


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
    try:
        kind = json.loads(index.read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise UserError(f"{index}: not a pipeline index ({e})") from None
    if kind not in ("DDPMPipeline", "PoseDDPMPipeline"):
        raise UserError(f"{path} is not a train_unet.py pipeline ({index} names {kind!r}, not DDPMPipeline)")
    try:
        return (PoseDDPMPipeline if kind == "PoseDDPMPipeline" else DDPMPipeline).from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:  # a missing or broken unet/ or scheduler/
        raise UserError(f"{path}: the pipeline cannot be loaded ({type(e).__name__}: {e})") from None


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
    return save_samples(images, names, Path(cfg.output_dir or Path(cfg.pipeline) / "generated"))
