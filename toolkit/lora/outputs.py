"""What a pose-LoRA run writes: checkpoint hooks (adapters only), the LoRA in diffusers and kohya format, and the
reload check that fails the run when either file does not load or does not change the output."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file, save_file

from toolkit.errors import UserError

LORA_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "pose_lora_kohya.safetensors"  # A1111 / ComfyUI
CONTROLNET_LORA_FILE = "controlnet_lora.safetensors"


@contextlib.contextmanager
def quiet_diffusers():
    """Silence diffusers' warnings for a moment (loading a UNet-only LoRA warns that the text encoder has none)."""
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)


class ReloadFailed(UserError):
    """A saved LoRA did not load into a fresh pipeline, or did not reproduce the trained output."""


def unet_lora_state(unet) -> dict[str, torch.Tensor]:
    """The UNet's LoRA weights with diffusers' key names (no `unet.` prefix), fp32 on the CPU."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def save_lora(unet, folder: str | Path, alpha: int) -> tuple[Path, Path]:
    """Write `folder/pytorch_lora_weights.safetensors` (diffusers) and `folder/pose_lora_kohya.safetensors`."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = unet.peft_config["default"].to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])  # a set is not JSON
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=unet_lora_state(unet), safe_serialization=True,
                                              unet_lora_adapter_metadata=metadata)
    kohya = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(load_file(folder / LORA_FILE)))
    for key in [k for k in kohya if k.endswith(".alpha")]:
        kohya[key] = torch.tensor(float(alpha))  # the converter writes alpha = rank (scale 1)
    tmp = folder / f".{KOHYA_FILE}.tmp"
    save_file(kohya, tmp)
    os.replace(tmp, folder / KOHYA_FILE)
    return folder / LORA_FILE, folder / KOHYA_FILE


def save_controlnet(controlnet, folder: Path, mode: str) -> None:
    """A trained ControlNet (`mode` lora or full): its LoRA as safetensors, or the full model as a diffusers folder."""
    if mode == "lora":
        from peft.utils import get_peft_model_state_dict

        state = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(controlnet).items()}
        save_file(state, folder / CONTROLNET_LORA_FILE)
    elif mode == "full":
        controlnet.save_pretrained(folder / "controlnet")


def load_controlnet(controlnet, folder: Path, mode: str) -> None:
    """Load what save_controlnet wrote into `controlnet`."""
    if mode == "lora":
        from peft.utils import set_peft_model_state_dict

        set_peft_model_state_dict(controlnet, load_file(folder / CONTROLNET_LORA_FILE))
    elif mode == "full":
        from diffusers import ControlNetModel

        controlnet.load_state_dict(ControlNetModel.from_pretrained(folder / "controlnet").state_dict())


def export_controlnet(controlnet, folder: Path) -> Path:
    """The ControlNet as inference needs it, LoRA fused in, fp32, as `folder/controlnet`. It changes `controlnet`
    in place, so it runs last."""
    if getattr(controlnet, "peft_config", None):
        controlnet.fuse_lora()
        controlnet.unload_lora()
    out, tmp = folder / "controlnet", folder / ".controlnet.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    controlnet.to(torch.float32).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def save_adapters(models, folder: Path, *, alpha: int, controlnet_mode: str) -> None:
    """A checkpoint's model part: the UNet's LoRA (both formats) and what the ControlNet trains, if anything."""
    save_lora(models.unet, folder, alpha)
    save_controlnet(models.controlnet, folder, controlnet_mode)


def load_adapters(models, folder: Path, *, controlnet_mode: str) -> None:
    """Load what `save_adapters` wrote; LoRA keys that the UNet does not have are an error naming the folder."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict

    state, _ = StableDiffusionPipeline.lora_state_dict(folder, weight_name=LORA_FILE)
    unet_state = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    result = set_peft_model_state_dict(models.unet, convert_unet_state_dict_to_peft(unet_state), "default")
    if result is not None and getattr(result, "unexpected_keys", None):
        raise UserError(f"{folder}: LoRA keys that this UNet does not have: {result.unexpected_keys[:3]}")
    load_controlnet(models.controlnet, folder, controlnet_mode)


def check_reload(make_pipeline, generate, *, trained: np.ndarray, base: np.ndarray, folder: Path) -> dict:
    """Load each saved format into a fresh pipeline; each must reproduce `trained` and differ from `base`.

    `make_pipeline()` builds a pipeline without adapters; `generate(pipe)` returns images (N, H, W, 3) float.
    """
    report = {}
    for name in (LORA_FILE, KOHYA_FILE):
        pipe = make_pipeline()
        try:
            with quiet_diffusers():
                pipe.load_lora_weights(folder, weight_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ReloadFailed(f"{folder / name} does not load into a pipeline: {e}") from None
        images = generate(pipe)
        change = float(np.abs(images - base).mean())
        mismatch = float(np.abs(images - trained).max())
        report[name] = {"mean_change_vs_base": round(change, 6), "max_diff_vs_trained": round(mismatch, 6)}
        if change == 0.0:
            raise ReloadFailed(f"{folder / name} loads but does not change the pipeline's output")
        if mismatch > max(1e-2, 0.25 * change):  # low-precision base weights round a little differently
            raise ReloadFailed(f"{folder / name} loads but does not reproduce the trained output (max diff "
                               f"{mismatch:.4f})")
    return report
