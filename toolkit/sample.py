"""Generate images and a grid from a saved pipeline (DDPM, pose-conditioned DDPM, or SD + ControlNet + LoRA).

    python -m toolkit.sample --pipeline runs/ddpm-figures --num_images 16 --num_inference_steps 20 --scheduler dpm
    python -m toolkit.sample --pipeline runs/figures-pose --poses data/figures/keypoints
    python -m toolkit.sample --pipeline SD_DIR --controlnet CONTROLNET --lora runs/pose-lora --poses poses/ \
        --prompt "a photo of a dancer" --scheduler unipc

With --poses (a folder of OpenPose JSON, or of pose-map images) a pose-conditioned pipeline makes one image per
pose, named like the pose file, so that `python -m toolkit.evaluate --poses` can pair them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolkit.config import ConfigError, option, parse_config
from toolkit.errors import UserError, cli_errors


@dataclass
class SampleConfig:
    """Options of `python -m toolkit.sample`."""

    pipeline: str = option("runs/ddpm-figures", "a pipeline folder (a train_unet.py output_dir)")
    poses: str | None = option(None, "pose-conditioned pipelines: folder of OpenPose JSON or pose-map images")
    num_images: int = option(16, "how many images to generate (with --poses: at most this many poses, in order)")
    num_inference_steps: int = option(20, "solver steps (20 for dpm/unipc, 50 for ddim, 1000 for ddpm)")
    scheduler: Literal["dpm", "unipc", "ddim", "ddpm"] = option("dpm", "sampler")
    seed: int = option(0, "random seed; the same seed gives the same images")
    batch_size: int = option(16, "images generated at once")
    resolution: int | None = option(None, "output size; defaults to the training resolution")
    output_dir: str | None = option(None, "where to write images and grid.png (default: PIPELINE/generated)")
    controlnet: str | None = option(None, "a ControlNet-OpenPose folder or Hub id: --pipeline is then a Stable "
                                          "Diffusion pipeline, driven by --poses")
    lora: str | None = option(None, "Stable Diffusion: a LoRA folder or .safetensors file (diffusers or kohya format)")
    prompt: str = option("a photo of a person", "Stable Diffusion: the prompt; the pose phrase and the preset's "
                                                "positive terms are appended")
    negative_prompt: str = option("", "Stable Diffusion: your negative prompt; the preset's terms are appended")
    preset: list[str] = option(["anatomy"], "Stable Diffusion: structure prompt presets (toolkit.prompts)")
    guidance_scale: float = option(7.5, "Stable Diffusion: classifier-free guidance scale")

    def __post_init__(self) -> None:
        for key in ("num_images", "num_inference_steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")


def load_pipeline(path: str):
    """DDPMPipeline or PoseDDPMPipeline .from_pretrained(path), with a clear error when it is not a pipeline."""
    from diffusers import DDPMPipeline

    from toolkit.ddpm.pipeline import PoseDDPMPipeline

    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise UserError(f"{path} is not a saved pipeline (no model_index.json)")
    kind = json.loads(index.read_text()).get("_class_name")
    return (PoseDDPMPipeline if kind == "PoseDDPMPipeline" else DDPMPipeline).from_pretrained(path)


def read_poses(folder: str, resolution: int, limit: int):
    """(names, maps (N, 3, R, R) in [-1, 1]) from OpenPose JSON (drawn at `resolution`) or pose-map images."""
    import numpy as np

    from toolkit.data.images import IMAGE_EXTENSIONS, load_rgb
    from toolkit.ddpm.pipeline import pose_tensor
    from toolkit.pose import Pose, load_pose, render_pose

    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"poses folder not found: {folder}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS | {".json"})[:limit]
    if not files:
        raise UserError(f"no OpenPose JSON or pose-map images in {folder}")
    maps = []
    for f in files:
        if f.suffix.lower() == ".json":
            pose = load_pose(f)
            sx, sy = resolution / pose.width, resolution / pose.height
            people = [type(p)(p.body * np.array([sx, sy, 1.0])) for p in pose.people]  # body only, rescaled
            maps.append(render_pose(Pose(resolution, resolution, people), scale=resolution / 512))
        else:
            maps.append(np.asarray(load_rgb(f)))
    return [f.stem for f in files], pose_tensor(maps, resolution)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Load the pipeline, swap in the chosen solver, generate, and save the images and a grid."""
    from PIL import Image

    from toolkit.sampling import generate, make_grid, make_scheduler

    cfg = parse_config(SampleConfig, argv, description=__doc__.splitlines()[0])
    if cfg.controlnet:
        from toolkit.lora.generate import sample_controlnet

        print(sample_controlnet(cfg))
        return 0
    pipe = load_pipeline(cfg.pipeline)
    conditioned = pipe.unet.config.in_channels > pipe.unet.config.out_channels
    if conditioned != (cfg.poses is not None):
        need = "pose-conditioned: pass --poses" if conditioned else "unconditional: drop --poses"
        raise UserError(f"{cfg.pipeline} is {need}")
    resolution = cfg.resolution or pipe.unet.config.sample_size
    names, maps = read_poses(cfg.poses, resolution, cfg.num_images) if conditioned else (None, None)
    count = len(names) if names else cfg.num_images
    scheduler = make_scheduler(cfg.scheduler, pipe.scheduler.config)
    images = generate(pipe.unet, scheduler, count, cfg.num_inference_steps, cfg.seed, cfg.batch_size,
                      resolution=resolution, progress=True, conditioning=maps)  # (N, H, W, 3) uint8
    out = Path(cfg.output_dir or Path(cfg.pipeline) / "generated")
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(out / f"{names[i] if names else f'{i:05d}'}.png")
    make_grid(images).save(out / "grid.png")
    print(f"wrote {len(images)} images and {out / 'grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
