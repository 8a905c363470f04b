"""The model card of a DDPM run: what it was trained on, how it did, how to use it."""

from __future__ import annotations

from pathlib import Path

from toolkit.config import to_dict
from toolkit.ddpm.config import TrainUNetConfig
from toolkit.hub import TOOLKIT, CardInfo
from toolkit.training.report import RunSummary

POSE_USAGE = ["# pip install anatomy-toolkit  (the pipeline class lives there)",
              "from diffusers import DDIMScheduler", "from PIL import Image",
              "from toolkit.ddpm.pipeline import PoseDDPMPipeline", "",
              'pipe = PoseDDPMPipeline.from_pretrained("{repo_id}")',
              "pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # DDIM-50 scored best (docs/figures.md)",
              'images = pipe([Image.open("pose.png")], num_inference_steps=50)  # OpenPose maps in, images out']


def card_info(cfg: TrainUNetConfig, summary: RunSummary) -> CardInfo:
    """What the model card of a DDPM run says: data, figures, sample grid and the resolved config."""
    datasets = [cfg.dataset_name] if cfg.dataset_name and not Path(cfg.dataset_name).exists() else None
    resolution = cfg.stages[-1].resolution if cfg.stages else cfg.resolution
    prediction = cfg.prediction_type or "epsilon"
    figures = {
        "steps": summary.start_step + summary.steps_done,
        "resolution": f"{resolution} px",
        "throughput": f"{summary.images_per_second:.1f} img/s",
        "final loss (smoothed)": f"{summary.smoothed_loss:.4f}",
        "mixed precision": summary.mixed_precision,
        "skipped files": len(summary.skipped_files),
    }
    posed = cfg.conditioning == "pose"
    kind = "A pose-conditioned (OpenPose map concatenated to the input)" if posed else "An unconditional"
    description = (f"{kind} image diffusion model (diffusers `UNet2DModel`, preset `{cfg.model_preset}`, "
                   f"{prediction} prediction) trained from scratch on {summary.data} with {TOOLKIT} "
                   "`train_unet.py`.")
    tags = ["ddpm", "openpose", "pose-conditioned"] if posed else ["unconditional-image-generation", "ddpm"]
    return CardInfo(repo_id=cfg.hub_model_id, pipeline_tag="image-to-image" if posed else
                    "unconditional-image-generation", license=cfg.hub_license, description=description, tags=tags,
                    datasets=datasets, grid="samples/final.png", loss_plot="loss.png", config=to_dict(cfg),
                    figures=figures, usage=POSE_USAGE if posed else None)
