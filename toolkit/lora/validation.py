"""Validation of pose-LoRA training: fixed (prompt, negative prompt, pose) triples, a fast solver with CFG, a grid of
pose | base model | with LoRA, and the pose fidelity of both (detected pose vs conditioning pose: PCK and OKS-AP)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toolkit.errors import UserError
from toolkit.lora.data import crop_pose, draw_map
from toolkit.pose.keypoints import Pose, load_pose
from toolkit.prompts import build_prompts, pose_phrase
from toolkit.prompts.embed import encode_prompts
from toolkit.sampling import SCHEDULERS, make_grid


@dataclass
class ValidationSet:
    """N conditioning poses at the training resolution (maps uint8 (N, R, R, 3) and keypoints) with prompts."""

    names: list[str]
    maps: np.ndarray
    poses: list[Pose]
    prompts: list[str]
    negative: str


def fit_pose(pose: Pose, resolution: int) -> Pose:
    """The pose resized so that its short side is `resolution` and centre-cropped to a square, as the data is."""
    scale = resolution / min(pose.width, pose.height)
    left = (round(pose.width * scale) - resolution) // 2
    top = (round(pose.height * scale) - resolution) // 2
    return crop_pose(pose, scale, left, top, resolution)


def validation_set(cfg, data, tokenizer) -> ValidationSet:
    """Poses from --validation_poses (OpenPose JSON), else the first training examples that have keypoints."""
    if cfg.validation_poses:
        files = sorted(Path(cfg.validation_poses).glob("*.json"))[: cfg.num_validation_images]
        if not files:
            raise UserError(f"validation_poses: no OpenPose JSON files in {cfg.validation_poses}")
        named = [(f.stem, load_pose(f)) for f in files]
    else:
        named = [(Path(r.name).stem, r.keypoints) for r in data.rows if r.keypoints is not None]
        named = named[: cfg.num_validation_images]
        if not named:
            raise UserError("no training example has keypoints: pass --validation_poses DIR (OpenPose JSON)")
    poses = [fit_pose(p, cfg.resolution) for _, p in named]
    maps = np.stack([draw_map(p) for p in poses])
    prompts, negative = [], ""
    for pose in poses:
        pair = build_prompts(cfg.validation_prompt, pose_text=pose_phrase([p.body for p in pose.people]),
                             presets=cfg.validation_preset, tokenizer=tokenizer)
        prompts.append(pair.positive)
        negative = pair.negative
    return ValidationSet([n for n, _ in named], maps, poses, prompts, negative)


def make_pipeline(models, unet, controlnet, scheduler: str):
    """A StableDiffusionControlNetPipeline over the in-memory components, with the validation solver."""
    from diffusers import StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=unet, controlnet=controlnet,
        scheduler=SCHEDULERS[scheduler].from_config(models.noise_scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, val: ValidationSet, cfg, count: int | None = None) -> np.ndarray:
    """Images (N, R, R, 3) float in [0, 1] for the first `count` triples; image i from seed (seed + i).

    With low-precision weights the pipeline runs under autocast, as training does: a ControlNet prepared by
    Accelerate returns fp32 residuals, which the UNet's bf16/fp16 norms would otherwise refuse.
    """
    n = count or len(val.prompts)
    embeds, negative = encode_prompts(pipe.tokenizer, pipe.text_encoder, val.prompts[:n], [val.negative])
    generators = [torch.Generator().manual_seed(cfg.seed + i) for i in range(n)]
    images = [Image.fromarray(m) for m in val.maps[:n]]
    dtype = pipe.vae.dtype  # the frozen weights' dtype (the VAE never carries adapters)
    low = dtype != torch.float32
    with torch.autocast(pipe.device.type, dtype=dtype) if low else contextlib.nullcontext():
        out = pipe(prompt_embeds=embeds.to(dtype), negative_prompt_embeds=negative.to(dtype), image=images,
                   num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                   generator=generators, height=cfg.resolution, width=cfg.resolution, output_type="np")
    return out.images


def pose_scores(images: np.ndarray, poses: list[Pose], detector) -> dict:
    """PCK@0.2 (torso), PCK@0.1 (box), OKS-AP and detection rate of generated images against their poses."""
    from toolkit.pose.fidelity import evaluate_fidelity

    u8 = (images * 255).round().clip(0, 255).astype(np.uint8)
    summary = evaluate_fidelity(list(u8), poses, detector)
    return {k: summary[k] for k in ("detection_rate", "pck@0.2_torso", "pck@0.1_bbox", "oks_ap")}


def make_detector(say):
    """The pose layer's MediaPipe detector, or None (with a message) when MediaPipe is not installed."""
    try:
        from toolkit.pose.detect import MediaPipeDetector

        return MediaPipeDetector()
    except (ImportError, UserError) as e:
        say(f"pose scores are off: {e}")
        return None


def validation_grid(val: ValidationSet, base: np.ndarray, lora: np.ndarray) -> Image.Image:
    """Rows of pose | base model | with LoRA."""
    to_u8 = lambda a: (a * 255).round().clip(0, 255).astype(np.uint8)  # noqa: E731
    tiles = [t for i in range(len(lora)) for t in (val.maps[i], to_u8(base[i]), to_u8(lora[i]))]
    return make_grid(np.stack(tiles), cols=3)
