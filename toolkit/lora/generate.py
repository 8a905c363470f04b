"""Generation with Stable Diffusion + ControlNet-OpenPose (+ a pose LoRA) from a folder of poses, for `toolkit.sample`.

Each OpenPose JSON is fitted to the output size as the trainer fits poses (short side, centre crop), drawn as the
conditioning map, and described in words for the prompt; images are named like their pose, and the fitted poses are
written beside them (`poses/`) so that `toolkit.evaluate_poses --poses OUT/poses` scores them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toolkit.errors import UserError
from toolkit.lora.data import draw_map
from toolkit.lora.outputs import quiet_diffusers
from toolkit.lora.validation import ValidationSet, fit_pose
from toolkit.pose.keypoints import load_pose, save_pose
from toolkit.prompts import build_prompts, pose_phrase
from toolkit.prompts.embed import encode_prompts
from toolkit.sampling import SCHEDULERS, make_grid


def load_controlnet_pipeline(path: str, controlnet: str, lora: str | None, scheduler: str):
    """StableDiffusionControlNetPipeline from local folders or Hub ids (fp16 on CUDA), with a LoRA and a solver."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    try:
        net = ControlNetModel.from_pretrained(controlnet, dtype=dtype)
        pipe = StableDiffusionControlNetPipeline.from_pretrained(path, controlnet=net, dtype=dtype,
                                                                 safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load the pipeline or ControlNet: {str(e).splitlines()[0]}") from None
    pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
    if lora:
        target = Path(lora)
        try:
            with quiet_diffusers():
                if target.is_file():
                    pipe.load_lora_weights(target.parent, weight_name=target.name)
                else:
                    pipe.load_lora_weights(lora)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"lora: could not load {lora}: {str(e).splitlines()[0]}") from None
    return pipe.to("cuda" if torch.cuda.is_available() else "cpu")


def read_pose_set(folder: str, resolution: int, limit: int, prompt: str, negative: str, presets: list[str],
                  tokenizer) -> ValidationSet:
    """The poses of `folder` (OpenPose JSON), fitted, drawn and turned into prompts."""
    files = sorted(Path(folder).glob("*.json"))[:limit] if Path(folder).is_dir() else []
    if not files:
        raise UserError(f"poses: no OpenPose JSON files in {folder}")
    poses = [fit_pose(load_pose(f), resolution) for f in files]
    maps = np.stack([draw_map(p) for p in poses])
    pairs = [build_prompts(prompt, negative, presets, pose_phrase([p.body for p in pose.people]), tokenizer)
             for pose in poses]
    return ValidationSet([f.stem for f in files], maps, poses, [p.positive for p in pairs], pairs[0].negative)


def sample_controlnet(cfg) -> str:
    """Generate one image per pose; returns a status line."""
    if not cfg.poses:
        raise UserError("--controlnet needs --poses (a folder of OpenPose JSON files)")
    pipe = load_controlnet_pipeline(cfg.pipeline, cfg.controlnet, cfg.lora, cfg.scheduler)
    resolution = cfg.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    poses = read_pose_set(cfg.poses, resolution, cfg.num_images, cfg.prompt, cfg.negative_prompt, cfg.preset,
                          pipe.tokenizer)
    lora_dir = Path(cfg.lora).parent if cfg.lora and Path(cfg.lora).is_file() else cfg.lora
    out = Path(cfg.output_dir or Path(lora_dir or cfg.pipeline) / "generated")
    (out / "poses").mkdir(parents=True, exist_ok=True)
    images = []
    for i, name in enumerate(poses.names):
        embeds, negative = encode_prompts(pipe.tokenizer, pipe.text_encoder, [poses.prompts[i]], [poses.negative])
        image = pipe(prompt_embeds=embeds.to(pipe.unet.dtype), negative_prompt_embeds=negative.to(pipe.unet.dtype),
                     image=Image.fromarray(poses.maps[i]), num_inference_steps=cfg.num_inference_steps,
                     guidance_scale=cfg.guidance_scale, height=resolution, width=resolution,
                     generator=torch.Generator().manual_seed(cfg.seed + i)).images[0]
        image.save(out / f"{name}.png")
        save_pose(poses.poses[i], out / "poses" / f"{name}.json")
        images.append(np.asarray(image))
    make_grid(images).save(out / "grid.png")
    return f"wrote {len(images)} images, their poses and {out / 'grid.png'} (prompt: {poses.prompts[0]!r})"
