"""The end of a pose-LoRA run: final validation, the LoRA in both formats, their reload check, the model card and
the Hub upload."""

from __future__ import annotations

from toolkit.config import to_dict
from toolkit.hub import CardInfo, build_model_card, push_folder, stage_upload
from toolkit.lora import validation as V
from toolkit.lora.outputs import (
    CONTROLNET_LORA_FILE,
    KOHYA_FILE,
    LORA_FILE,
    check_reload,
    export_controlnet,
    save_controlnet,
    save_lora,
)

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


def finish(run, summary) -> None:
    """Save the LoRA (diffusers + kohya) and a trained ControlNet, and check that both files reload into a
    pipeline and reproduce the output (main process only)."""
    cfg, acc = run.cfg, run.accelerator
    unet = run.models.unet
    unet.eval()
    pipe = V.make_pipeline(run.models, unet, run.models.controlnet, cfg.validation_scheduler)
    count = min(2, len(run.val.prompts))
    trained = V.generate(pipe, run.val, cfg, count)
    files = save_lora(unet, run.out, cfg.alpha)
    if cfg.train_controlnet == "lora":
        save_controlnet(cfg, run.models.controlnet, run.out)  # the adapter alone, beside the fused model below
    summary.lora_files = [str(f) for f in files]
    base = run.base_images[:count]
    unet.unload_lora()  # the bare UNet: each saved file must bring the LoRA back on its own

    def without_lora():
        pipe.unload_lora_weights()
        return pipe

    summary.reload = check_reload(without_lora, lambda p: V.generate(p, run.val, cfg, count), trained, base, run.out)
    acc.print(f"reload check: {summary.reload}")
    exported = export_controlnet(cfg, run.models.controlnet, run.out)
    summary.controlnet = str(exported) if exported else cfg.controlnet_model_name_or_path


def card_info(cfg, summary) -> CardInfo:
    """The model card of a pose LoRA: base model, ControlNet, tags, validation grid, pose fidelity, config."""
    lora, base = summary.pose_scores.get("lora") or {}, summary.pose_scores.get("base") or {}
    figures = {"steps": summary.start_step + summary.steps_done, "resolution": f"{cfg.resolution} px",
               "LoRA rank / alpha": f"{cfg.rank} / {cfg.alpha} on {cfg.lora_layers}",
               "final loss (smoothed)": f"{summary.smoothed_loss:.4f}", "mixed precision": summary.mixed_precision}
    for key in ("pck@0.2_torso", "oks_ap", "detection_rate"):
        if key in lora:
            figures[f"pose fidelity {key} (LoRA / base)"] = f"{lora[key]} / {base.get(key)}"
    source = cfg.controlnet_model_name_or_path or "initialised from the UNet"
    how = {"no": "frozen", "lora": "also trained with LoRA; fused into `controlnet/`",
           "full": "also trained; saved in `controlnet/`"}[cfg.train_controlnet]
    description = (f"A LoRA for the UNet of `{cfg.pretrained_model_name_or_path}`, trained under the "
                   f"ControlNet-OpenPose `{source}` ({how}) with "
                   "[anatomy-toolkit](https://github.com/) `train_pose_lora.py`, so that people follow the given "
                   "pose without distorted limbs. Validation grid: pose | base model | with this LoRA. "
                   f"`{KOHYA_FILE}` is the same LoRA for A1111 / ComfyUI.")
    given = cfg.train_controlnet == "no" and cfg.controlnet_model_name_or_path
    controlnet = f'"{cfg.controlnet_model_name_or_path}"' if given else '"{repo_id}", subfolder="controlnet"'
    usage = [line.replace("{controlnet}", controlnet).replace("{base}", cfg.pretrained_model_name_or_path)
             for line in USAGE]
    return CardInfo(repo_id=cfg.hub_model_id, pipeline_tag="text-to-image", license=cfg.hub_license,
                    description=description, tags=["lora", "controlnet", "openpose", "stable-diffusion",
                                                   "text-to-image", "diffusers-training"],
                    grid="samples/final.png", loss_plot="loss.png", config=to_dict(cfg), figures=figures,
                    usage=usage, base_model=cfg.pretrained_model_name_or_path)


def publish(cfg, summary) -> str:
    """Write the card and the upload folder; push it unless this is a dry run. Returns a status line."""
    files = [LORA_FILE, KOHYA_FILE, CONTROLNET_LORA_FILE, "controlnet", "README.md", "config.yaml", "summary.json",
             "samples/final.png", "loss.png"]
    stage = stage_upload(cfg.output_dir, build_model_card(card_info(cfg, summary)), files)
    if cfg.hub_dry_run:
        return f"hub dry run: {stage} holds exactly what would be uploaded to {cfg.hub_model_id}"
    return f"pushed to {push_folder(stage, cfg.hub_model_id, cfg.hub_private_repo)}"


