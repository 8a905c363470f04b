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
from toolkit.lora.config import PoseLoraConfig
from toolkit.lora.data import PoseData
from toolkit.lora.models import Models
from toolkit.pose.conditioning import draw_map, fit_pose
from toolkit.pose.draw import DEFAULT_THRESHOLD
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

    def part(self, start: int, stop: int) -> ValidationSet:
        """The triples start..stop-1."""
        return ValidationSet(self.names[start:stop], self.maps[start:stop], self.poses[start:stop],
                             self.prompts[start:stop], self.negative)


@dataclass(frozen=True)
class Sampling:
    """How validation (and sampling) images are generated: solver, steps, guidance, size and the first seed."""

    scheduler: str
    steps: int
    guidance_scale: float
    resolution: int
    seed: int

    @classmethod
    def of(cls, cfg: PoseLoraConfig) -> Sampling:
        """The validation settings of a run."""
        return cls(cfg.validation_scheduler, cfg.num_inference_steps, cfg.guidance_scale, cfg.resolution, cfg.seed)


def pose_set(named: list[tuple[str, Pose]], resolution: int, *, prompt: str, presets: list[str], tokenizer,
             negative: str = "", thresholds: list[float] | None = None) -> ValidationSet:
    """Named poses fitted to `resolution` (short side, centre crop, as the data is), drawn (joints above their
    threshold), and turned into prompts: the prompt, the pose phrase and the presets' positive terms; the presets'
    negatives."""
    poses = [fit_pose(p, resolution) for _, p in named]
    thresholds = thresholds or [DEFAULT_THRESHOLD] * len(poses)
    maps = np.stack([draw_map(p, threshold=t) for p, t in zip(poses, thresholds, strict=True)])  # (N, R, R, 3)
    pairs = [build_prompts(prompt, negative, presets, pose_text=pose_phrase([p.body for p in pose.people]),
                           tokenizer=tokenizer) for pose in poses]
    return ValidationSet([n for n, _ in named], maps, poses, [p.positive for p in pairs], pairs[0].negative)


def poses_in(folder: str, limit: int, *, option: str) -> list[tuple[str, Pose]]:
    """(name, pose) of the first `limit` OpenPose JSON files of `folder`, in name order; none is an error naming
    the `option` that gave the folder."""
    files = sorted(Path(folder).glob("*.json"))[:limit] if Path(folder).is_dir() else []
    if not files:
        raise UserError(f"{option}: no OpenPose JSON files in {folder}")
    return [(f.stem, load_pose(f)) for f in files]


def training_poses(data: PoseData, count: int, *, cycle: bool = False) -> tuple[list[tuple[str, Pose]], list[float]]:
    """(name, pose) and joint thresholds of the first `count` training examples that have keypoints (repeated in
    order up to `count` with `cycle`)."""
    rows = [r for r in data.rows if r.keypoints is not None]
    if not rows:
        raise UserError("no training example has keypoints: pass --validation_poses DIR (OpenPose JSON)")
    rows = [rows[i % len(rows)] for i in range(count)] if cycle else rows[:count]
    return [(Path(r.name).stem, r.keypoints) for r in rows], [r.threshold for r in rows]


def validation_set(cfg: PoseLoraConfig, data: PoseData, tokenizer) -> ValidationSet:
    """Poses from --validation_poses (OpenPose JSON), else the first training examples that have keypoints."""
    if cfg.validation_poses:
        named = poses_in(cfg.validation_poses, cfg.num_validation_images, option="validation_poses")
        thresholds = None
    else:
        named, thresholds = training_poses(data, cfg.num_validation_images)
    return pose_set(named, cfg.resolution, prompt=cfg.validation_prompt, presets=cfg.validation_preset,
                    tokenizer=tokenizer, thresholds=thresholds)


def eval_set(cfg: PoseLoraConfig, data: PoseData, tokenizer, count: int) -> ValidationSet:
    """`count` training poses (cycled) with the validation prompts: samples for the in-loop KID, which compares
    them with the training images."""
    named, thresholds = training_poses(data, count, cycle=True)
    return pose_set(named, cfg.resolution, prompt=cfg.validation_prompt, presets=cfg.validation_preset,
                    tokenizer=tokenizer, thresholds=thresholds)


def make_pipeline(models: Models, scheduler: str):
    """A StableDiffusionControlNetPipeline over the in-memory components, with the validation solver."""
    from diffusers import StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=models.unet,
        controlnet=models.controlnet,
        scheduler=SCHEDULERS[scheduler].from_config(models.noise_scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, val: ValidationSet, sampling: Sampling, count: int | None = None) -> np.ndarray:
    """Images (N, R, R, 3) float in [0, 1] for the first `count` triples; image i from seed (seed + i).

    With low-precision weights the pipeline runs under autocast, as training does: a ControlNet prepared by
    Accelerate returns fp32 residuals, which the UNet's bf16/fp16 norms would otherwise refuse.
    """
    n = count or len(val.prompts)
    embeds, negative = encode_prompts(pipe.tokenizer, pipe.text_encoder, val.prompts[:n], [val.negative])
    generators = [torch.Generator().manual_seed(sampling.seed + i) for i in range(n)]
    images = [Image.fromarray(m) for m in val.maps[:n]]
    dtype = pipe.vae.dtype  # the frozen weights' dtype (the VAE never carries adapters)
    low = dtype != torch.float32
    with torch.autocast(pipe.device.type, dtype=dtype) if low else contextlib.nullcontext():
        out = pipe(prompt_embeds=embeds.to(dtype), negative_prompt_embeds=negative.to(dtype), image=images,
                   num_inference_steps=sampling.steps, guidance_scale=sampling.guidance_scale,
                   generator=generators, height=sampling.resolution, width=sampling.resolution, output_type="np")
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
        from toolkit.pose.detect import MediaPipeDetector, MediaPipeOptions

        return MediaPipeDetector(MediaPipeOptions(count_people=False))  # the prepare_poses detector, uncounted
    except (ImportError, UserError) as e:
        say(f"pose scores are off: {e}")
        return None


def validation_grid(val: ValidationSet, base: np.ndarray, lora: np.ndarray) -> Image.Image:
    """Rows of pose | base model | with LoRA."""
    to_u8 = lambda a: (a * 255).round().clip(0, 255).astype(np.uint8)  # noqa: E731
    tiles = [t for i in range(len(lora)) for t in (val.maps[i], to_u8(base[i]), to_u8(lora[i]))]
    return make_grid(np.stack(tiles), cols=3)
