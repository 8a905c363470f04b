"""The end of a pose-LoRA run: the LoRA in both formats, their reload check, the ControlNet inference needs, and the
model card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.config import to_dict
from toolkit.hub import TOOLKIT, CardInfo
from toolkit.lora.config import PoseLoraConfig
from toolkit.lora.models import Models
from toolkit.lora.outputs import KOHYA_FILE, check_reload, export_controlnet, save_controlnet, save_lora
from toolkit.lora.validation import Sampling, ValidationSet, generate, make_pipeline
from toolkit.training.report import RunSummary

USAGE = ["import torch",
         "from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, UniPCMultistepScheduler",
         "from diffusers.utils import load_image", "",
         'controlnet = ControlNetModel.from_pretrained({controlnet}, torch_dtype=torch.float16)',
         'pipe = StableDiffusionControlNetPipeline.from_pretrained("{base}", controlnet=controlnet, '
         'torch_dtype=torch.float16).to("cuda")',
         "pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)",
         'pipe.load_lora_weights("{repo_id}")',
         'image = pipe("a photo of a person, full body, standing", image=load_image("pose.png"),',
         '             negative_prompt="bad anatomy, extra limbs, extra fingers", num_inference_steps=20).images[0]']


@dataclass
class LoraSummary(RunSummary):
    """The run's figures plus pose fidelity and the reload check."""

    pose_scores: dict = field(default_factory=dict)
    reload: dict = field(default_factory=dict)
    lora_files: list[str] = field(default_factory=list)
    controlnet: str | None = None  # the ControlNet to sample with: the given one, or the run's own controlnet/

    def output_rows(self) -> list[tuple[str, str]]:
        """The LoRA files, the grid, the pose scores and the reload check."""
        return [("LoRA", ", ".join(self.lora_files)), ("ControlNet", str(self.controlnet)), ("samples", self.samples),
                ("pose fidelity", str(self.pose_scores or "not scored")),
                ("reload check", "both formats load and reproduce the output" if self.reload else "-")]


def finish(cfg: PoseLoraConfig, models: Models, val: ValidationSet, *, base_images: np.ndarray, out: Path,
           summary: LoraSummary) -> None:
    """Save the LoRA (diffusers + kohya) and a trained ControlNet, check that both files reload into a pipeline
    and reproduce the output, and export the ControlNet inference needs (main process only)."""
    unet, sampling = models.unet, Sampling.of(cfg)
    unet.eval()
    pipe = make_pipeline(models, cfg.validation_scheduler)
    count = min(2, len(val.prompts))
    trained = generate(pipe, val, sampling, count)
    files = save_lora(unet, out, cfg.adapter.alpha)
    if cfg.train_controlnet == "lora":
        save_controlnet(models.controlnet, out, "lora")  # the adapter alone, beside the fused model below
    summary.lora_files = [str(f) for f in files]
    unet.unload_lora()  # the bare UNet: each saved file must bring the LoRA back on its own

    def without_lora():
        pipe.unload_lora_weights()
        return pipe

    summary.reload = check_reload(without_lora, lambda p: generate(p, val, sampling, count), trained=trained,
                                  base=base_images[:count], folder=out)
    print(f"reload check: {summary.reload}")
    given = cfg.train_controlnet == "no" and cfg.controlnet_model_name_or_path
    summary.controlnet = cfg.controlnet_model_name_or_path if given else str(export_controlnet(models.controlnet, out))


def card_info(cfg: PoseLoraConfig, summary: LoraSummary) -> CardInfo:
    """The model card of a pose LoRA: base model, ControlNet, tags, validation grid, pose fidelity, config."""
    lora, base = summary.pose_scores.get("lora") or {}, summary.pose_scores.get("base") or {}
    adapter = cfg.adapter
    figures = {"steps": summary.start_step + summary.steps_done, "resolution": f"{cfg.resolution} px",
               "LoRA rank / alpha": f"{adapter.rank} / {adapter.alpha} on {adapter.layers}",
               "final loss (smoothed)": f"{summary.smoothed_loss:.4f}", "mixed precision": summary.mixed_precision}
    for key in ("pck@0.2_torso", "oks_ap", "detection_rate"):
        if key in lora:
            figures[f"pose fidelity {key} (LoRA / base)"] = f"{lora[key]} / {base.get(key)}"
    source = cfg.controlnet_model_name_or_path or "initialised from the UNet"
    how = {"no": "frozen", "lora": "also trained with LoRA; fused into `controlnet/`",
           "full": "also trained; saved in `controlnet/`"}[cfg.train_controlnet]
    description = (f"A LoRA for the UNet of `{cfg.pretrained_model_name_or_path}`, trained under the "
                   f"ControlNet-OpenPose `{source}` ({how}) with {TOOLKIT} `train_pose_lora.py`, so that people "
                   "follow the given pose without distorted limbs. Validation grid: pose | base model | with this "
                   f"LoRA. `{KOHYA_FILE}` is the same LoRA for A1111 / ComfyUI.")
    given = cfg.train_controlnet == "no" and cfg.controlnet_model_name_or_path
    controlnet = f'"{cfg.controlnet_model_name_or_path}"' if given else '"{repo_id}", subfolder="controlnet"'
    usage = [line.replace("{controlnet}", controlnet).replace("{base}", cfg.pretrained_model_name_or_path)
             for line in USAGE]
    return CardInfo(repo_id=cfg.hub_model_id, pipeline_tag="text-to-image", license=cfg.hub_license,
                    description=description, tags=["lora", "controlnet", "openpose", "stable-diffusion",
                                                   "text-to-image", "diffusers-training"],
                    grid="samples/final.png", loss_plot="loss.png", config=to_dict(cfg), figures=figures,
                    usage=usage, base_model=cfg.pretrained_model_name_or_path)
