"""What a DDPM run writes: the UNet and its EMA in checkpoints (safetensors folders), and the saved pipeline."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from diffusers import DDPMPipeline, UNet2DModel
from diffusers.training_utils import EMAModel

from toolkit.ddpm.pipeline import PoseDDPMPipeline
from toolkit.training.report import RunSummary
from toolkit.training.runs import ema_weights


@dataclass
class DDPMSummary(RunSummary):
    """The run's figures; its output is a pipeline folder."""

    def output_rows(self) -> list[tuple[str, str]]:
        """The pipeline and its samples."""
        out = Path(self.output_dir)
        index = out / "model_index.json"
        posed = index.is_file() and PoseDDPMPipeline.__name__ in index.read_text()  # it samples from given poses
        hint = f"python -m toolkit.sample ddpm --pipeline {out}" + (" --poses POSE_JSON_DIR" if posed else "")
        return [("pipeline", f"{out} ({hint})"), ("samples", self.samples)]


def save_unet(unet: UNet2DModel, ema: EMAModel | None, folder: Path) -> None:
    """A checkpoint's model part: `unet/` and, with an EMA, `unet_ema/` (safetensors)."""
    unet.save_pretrained(folder / "unet")
    if ema is not None:
        ema.save_pretrained(folder / "unet_ema")


def load_unet(unet: UNet2DModel, ema: EMAModel | None, folder: Path) -> None:
    """Load what `save_unet` wrote into `unet` and `ema`, exactly (the EMA's step count included)."""
    if ema is not None:
        loaded = EMAModel.from_pretrained(folder / "unet_ema", UNet2DModel, foreach=True)
        ema.load_state_dict(loaded.state_dict())
    loaded = UNet2DModel.from_pretrained(folder, subfolder="unet")
    unet.register_to_config(**loaded.config)
    unet.load_state_dict(loaded.state_dict())


def save_pipeline(unet: UNet2DModel, ema: EMAModel | None, noise_scheduler, out: Path, *, resolution: int,
                  pose_conditioned: bool = False) -> None:
    """Save a DDPMPipeline, or a PoseDDPMPipeline, (EMA weights when used) at `out`; model_index.json is written
    last, so a folder with it is complete."""
    tmp = out / ".pipeline.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipeline_cls = PoseDDPMPipeline if pose_conditioned else DDPMPipeline
    with ema_weights(ema, unet):
        unet.register_to_config(sample_size=resolution)
        pipeline_cls(unet=unet, scheduler=noise_scheduler).save_pretrained(tmp)
    (out / "model_index.json").unlink(missing_ok=True)
    for part in ("unet", "scheduler"):
        shutil.rmtree(out / part, ignore_errors=True)
        (tmp / part).rename(out / part)
    os.replace(tmp / "model_index.json", out / "model_index.json")
    shutil.rmtree(tmp)
