"""`python -m toolkit.sample controlnet`: Stable Diffusion + ControlNet-OpenPose (+ a pose LoRA) from a folder of
poses.

Each OpenPose JSON is fitted to the output size as the trainer fits poses (short side, centre crop), drawn as the
conditioning map, and described in words for the prompt; images are named like their pose, and the fitted poses are
written beside them (`poses/`) so that `toolkit.evaluate_poses --poses OUT/poses` scores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from toolkit.config import ConfigError, option, with_defaults
from toolkit.errors import UserError
from toolkit.lora.outputs import quiet_diffusers
from toolkit.lora.validation import pose_set, poses_in
from toolkit.pose.keypoints import save_pose
from toolkit.prompts.embed import encode_prompts
from toolkit.sampling import SCHEDULERS, SampleConfig, make_grid


@dataclass
@with_defaults(batch_size=1, help={"batch_size": "images generated at once (1: the least GPU memory). Prompts of "
                                                 "one batch are padded to the longest, so with prompts over 77 "
                                                 "tokens the batch size can change an image"})
class ControlNetSampleConfig(SampleConfig):
    """Options of `python -m toolkit.sample controlnet`: --pipeline is a Stable Diffusion pipeline."""

    controlnet: str | None = option(None, "a ControlNet-OpenPose folder or Hub id (required)")
    lora: str | None = option(None, "a LoRA folder or .safetensors file (diffusers or kohya format)")
    prompt: str = option("a photo of a person", "the prompt; the pose phrase and the preset's positive terms are "
                                                "appended")
    negative_prompt: str = option("", "your negative prompt; the preset's terms are appended")
    preset: list[str] = option(["anatomy"], "structure prompt presets (toolkit.prompts)")
    guidance_scale: float = option(7.5, "classifier-free guidance scale")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.controlnet:
            raise ConfigError("controlnet is required: a ControlNet-OpenPose folder or Hub id")
        if not self.poses:
            raise ConfigError("--controlnet needs --poses (a folder of OpenPose JSON files)")


def load_controlnet_pipeline(path: str, controlnet: str, *, lora: str | None, scheduler: str):
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


def sample_controlnet(cfg: ControlNetSampleConfig) -> str:
    """Generate one image per pose; returns a status line."""
    pipe = load_controlnet_pipeline(cfg.pipeline, cfg.controlnet, lora=cfg.lora, scheduler=cfg.scheduler)
    resolution = cfg.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    poses = pose_set(poses_in(cfg.poses, cfg.num_images, option="poses"), resolution, prompt=cfg.prompt,
                     presets=cfg.preset, tokenizer=pipe.tokenizer, negative=cfg.negative_prompt)
    lora_dir = Path(cfg.lora).parent if cfg.lora and Path(cfg.lora).is_file() else cfg.lora
    out = Path(cfg.output_dir or Path(lora_dir or cfg.pipeline) / "generated")
    (out / "poses").mkdir(parents=True, exist_ok=True)
    images = []
    for start in range(0, len(poses.names), cfg.batch_size):
        chunk = range(start, min(start + cfg.batch_size, len(poses.names)))
        embeds, negative = encode_prompts(pipe.tokenizer, pipe.text_encoder, [poses.prompts[i] for i in chunk],
                                          [poses.negative])
        dtype = pipe.unet.dtype
        images += pipe(prompt_embeds=embeds.to(dtype), negative_prompt_embeds=negative.to(dtype),
                       image=[Image.fromarray(poses.maps[i]) for i in chunk],
                       num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                       height=resolution, width=resolution,
                       generator=[torch.Generator().manual_seed(cfg.seed + i) for i in chunk]).images  # i: seed + i
    for image, name, pose in zip(images, poses.names, poses.poses, strict=True):
        image.save(out / f"{name}.png")
        save_pose(pose, out / "poses" / f"{name}.json")
    make_grid(images).save(out / "grid.png")
    return f"wrote {len(images)} images, their poses and {out / 'grid.png'} (prompt: {poses.prompts[0]!r})"
