"""Generate images and a grid from a saved DDPMPipeline with a fast solver.

    python -m toolkit.sample --pipeline runs/ddpm-figures --num_images 16 --num_inference_steps 20 --scheduler dpm
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolkit.config import ConfigError, option, parse_config
from toolkit.errors import UserError, cli_errors


@dataclass
class SampleConfig:
    """Options of `python -m toolkit.sample`."""

    pipeline: str = option("runs/ddpm-figures", "a DDPMPipeline folder (a train_unet.py output_dir)")
    num_images: int = option(16, "how many images to generate")
    num_inference_steps: int = option(20, "solver steps (20 for dpm/unipc, 50 for ddim, 1000 for ddpm)")
    scheduler: Literal["dpm", "unipc", "ddim", "ddpm"] = option("dpm", "sampler")
    seed: int = option(0, "random seed; the same seed gives the same images")
    batch_size: int = option(16, "images generated at once")
    resolution: int | None = option(None, "output size; defaults to the training resolution")
    output_dir: str | None = option(None, "where to write images and grid.png (default: PIPELINE/generated)")

    def __post_init__(self) -> None:
        for key in ("num_images", "num_inference_steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")


def load_pipeline(path: str):
    """DDPMPipeline.from_pretrained(path) with a clear error when the folder is not a pipeline."""
    from diffusers import DDPMPipeline

    if not (Path(path) / "model_index.json").is_file():
        raise UserError(f"{path} is not a saved pipeline (no model_index.json)")
    return DDPMPipeline.from_pretrained(path)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Load the pipeline, swap in the chosen solver, generate, and save the images and a grid."""
    from PIL import Image

    from toolkit.sampling import generate, make_grid, make_scheduler

    cfg = parse_config(SampleConfig, argv, description=__doc__.splitlines()[0])
    pipe = load_pipeline(cfg.pipeline)
    scheduler = make_scheduler(cfg.scheduler, pipe.scheduler.config)
    images = generate(pipe.unet, scheduler, cfg.num_images, cfg.num_inference_steps, cfg.seed, cfg.batch_size,
                      resolution=cfg.resolution, progress=True)  # (N, H, W, 3) uint8
    out = Path(cfg.output_dir or Path(cfg.pipeline) / "generated")
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(out / f"{i:05d}.png")
    make_grid(images).save(out / "grid.png")
    print(f"wrote {len(images)} images and {out / 'grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
