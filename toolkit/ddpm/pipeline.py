"""A diffusers pipeline for pose-conditioned UNet2DModels: the OpenPose map is concatenated to the noisy image."""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, UNet2DModel
from PIL import Image

from toolkit.data.folders import pose_tensor


class PoseDDPMPipeline(DiffusionPipeline):
    """Generate images from OpenPose maps with a UNet2DModel trained on [noisy image, pose map] inputs.

    `PoseDDPMPipeline.from_pretrained(folder)` loads a train_unet.py run trained with --conditioning pose.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, poses: list[Image.Image], num_inference_steps: int = 20, seed: int = 0,
                 output_type: str = "pil"):
        """One image per pose map; `output_type` "np" returns uint8 (N, H, W, 3)."""
        from toolkit.sampling import generate

        cond = pose_tensor(poses, self.unet.config.sample_size)
        images = generate(self.unet, self.scheduler, len(poses), num_inference_steps=num_inference_steps, seed=seed,
                          conditioning=cond)
        return images if output_type == "np" else [Image.fromarray(im) for im in images]
