"""Pose-LoRA training speed and memory: caching on a small SD-like model, and one step of the SD 1.5-size model.

    python benchmarks/bench_pose_lora.py caching --steps 8          # CPU: cached vs uncached, SD 1.5 layout at 1/4 width
    python benchmarks/bench_pose_lora.py sd15 --steps 2             # SD 1.5 UNet + ControlNet, random weights, 512 px
    python benchmarks/bench_pose_lora.py sd15 --device cuda --precision fp16 --batch_size 4 --attention xformers \\
        --gradient_checkpointing                                     # the GPU table (docs/pose_lora.md)

`caching` runs each variant in its own process (so that peak RSS is its own) through the real trainer: the run is
built (caches included, timed apart), two warm-up steps are taken, then `--steps` steps are timed. `sd15` builds SD
1.5's UNet from `benchmarks/sd15_configs` (configs only; random weights, which cost the same) and a ControlNet from
it, puts a rank-16 LoRA on the attention projections and times full training steps on random
latents and text embeddings, plus one encode of a 512 px image by SD 1.5's VAE (what caching saves per image).
Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SD15 = Path(__file__).resolve().parent / "sd15_configs"  # SD 1.5's UNet and VAE configs (no weights)


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset_peak (Linux VmHWM), else since the start."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    """Start peak-memory accounting afresh (Linux), so that model construction in fp32 does not count."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def caching_worker(args) -> dict:
    """One variant of the caching comparison, in this process."""
    from toolkit.config import from_dict
    from toolkit.figures.dataset import write_dataset
    from toolkit.lora.config import PoseLoraConfig
    from toolkit.lora.tiny import SMALL, make_tiny_sd
    from toolkit.lora.trainer import PoseLoraTrainer
    from toolkit.training.loop import build, optimizer_step

    root = Path(args.workdir)
    if not (root / "models" / "sd").is_dir():
        make_tiny_sd(root / "models", size=SMALL)
        write_dataset(root / "figures", args.num_images, args.resolution, seed=0)
    cfg = from_dict(PoseLoraConfig, {
        "pretrained_model_name_or_path": str(root / "models/sd"), "train_data_dir": str(root / "figures"),
        "controlnet_model_name_or_path": str(root / "models/controlnet"), "output_dir": str(root / "run"),
        "resolution": args.resolution, "train_batch_size": args.batch_size, "max_train_steps": 1000,
        "cache_latents": args.cached, "cache_text_embeddings": args.cached, "random_flip": True,
        "mixed_precision": args.precision, "report_to": "none", "score_poses": False, "overwrite_output_dir": True})
    start = time.perf_counter()
    run, _ = build(PoseLoraTrainer, cfg)
    built = time.perf_counter() - start
    batches = run.batches(0)
    for step in range(2):
        optimizer_step(run, step, next(batches))
    start = time.perf_counter()
    for step in range(2, 2 + args.steps):
        optimizer_step(run, step, next(batches))
    per_step = (time.perf_counter() - start) / args.steps
    return {"cached": args.cached, "s_per_step": round(per_step, 3), "build_s_incl_cache": round(built, 1),
            "peak_rss_mb": round(peak_rss_mb()), "batch_size": args.batch_size, "resolution": args.resolution,
            "precision": run.accelerator.mixed_precision, "images": args.num_images}


def caching(args) -> list[dict]:
    """Both variants, each in a fresh process."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for cached in (True, False):
            cmd = [sys.executable, __file__, "caching-worker", "--workdir", tmp, "--steps", str(args.steps),
                   "--batch_size", str(args.batch_size), "--resolution", str(args.resolution),
                   "--num_images", str(args.num_images), "--precision", args.precision]
            cmd += ["--cached"] if cached else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
    return results


# A stand-in with SD 1.5's layout at toy width, for dry runs on a CPU (seconds, not minutes).
TOY = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "cross_attention_dim": 32}


def sd15_models(device: str, dtype: torch.dtype, rank: int, *, toy: bool = False):
    """SD 1.5's UNet with a rank-`rank` LoRA (fp32 trainable weights), a ControlNet made from it, and SD 1.5's VAE,
    all with random weights on `device` in `dtype` (`toy`: the layout at toy width); returns (unet, controlnet, vae,
    LoRA parameters)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from peft import LoraConfig

    from toolkit.lora.config import LORA_LAYERS

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15 / "unet"), **(TOY if toy else {}))
    controlnet = ControlNetModel.from_unet(unet)
    vae_config = AutoencoderKL.load_config(SD15 / "vae")
    vae = AutoencoderKL.from_config(vae_config, **({"block_out_channels": [32, 32, 64, 64]} if toy else {}))
    for m in (unet, controlnet, vae):
        m.requires_grad_(False)
        m.to(device, dtype=dtype)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_LAYERS["attn"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # trainable LoRA weights in fp32, as cast_training_params does
    return unet, controlnet, vae, params


def set_attention(modules, attention: str) -> None:
    """PyTorch SDPA or xformers attention in every module (raises when xformers is unavailable)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for m in modules:
        if attention == "xformers":
            m.enable_xformers_memory_efficient_attention()
        else:
            m.set_attn_processor(AttnProcessor2_0())


def set_checkpointing(modules, on: bool) -> None:
    """Gradient checkpointing on or off in every module."""
    for m in modules:
        m.enable_gradient_checkpointing() if on else m.disable_gradient_checkpointing()


def sd15_step_time(models, *, device: str, dtype: torch.dtype, batch_size: int, steps: int,
                   resolution: int = 512) -> dict:
    """Seconds per full LoRA training step (ControlNet forward, UNet forward and backward, AdamW) after one warm-up
    step, and the peak memory of those steps (CUDA max allocated, or peak RSS on a CPU)."""
    unet, controlnet, _, params = models
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    b, autocast = batch_size, torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)
    latents = torch.randn(b, 4, resolution // 8, resolution // 8, device=device, dtype=dtype)
    text = torch.randn(b, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    pose = torch.rand(b, 3, resolution, resolution, device=device, dtype=dtype)
    t = torch.randint(0, 1000, (b,), device=device)

    def step():
        with autocast:
            down, mid = controlnet(latents, t, encoder_hidden_states=text, controlnet_cond=pose, return_dict=False)
            pred = unet(latents, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
        loss = torch.nn.functional.mse_loss(pred.float(), latents.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reset_peak()
    step()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    per_step = (time.perf_counter() - start) / steps
    memory = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb()
    return {"batch_size": b, "resolution": resolution, "s_per_step": round(per_step, 3),
            "it_per_s": round(1 / per_step, 3), "peak_memory_mb": round(memory),
            "memory_kind": "CUDA max allocated" if cuda else "peak RSS"}


def sd15(args) -> dict:
    """Time full training steps of SD 1.5's UNet (LoRA) under its ControlNet at 512 px, and one VAE encode."""
    device = args.device
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}[args.precision]
    models = sd15_models(device, dtype, args.rank)
    set_checkpointing(models[:2], args.gradient_checkpointing)
    set_attention(models[:2], args.attention)
    result = sd15_step_time(models, device=device, dtype=dtype, batch_size=args.batch_size, steps=args.steps)
    with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        start = time.perf_counter()
        models[2].encode(torch.randn(1, 3, 512, 512, device=device, dtype=dtype))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        vae_s = time.perf_counter() - start
    return {"device": device, "precision": args.precision, "attention": args.attention,
            "gradient_checkpointing": args.gradient_checkpointing, "lora_rank": args.rank, **result,
            "vae_encode_512_s": round(vae_s, 2), "lora_params": sum(p.numel() for p in models[3])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["caching", "sd15", "caching-worker"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=256, help="caching: training resolution")
    parser.add_argument("--num_images", type=int, default=32, help="caching: figures in the dataset")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--attention", choices=["sdpa", "xformers"], default="sdpa")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "caching-worker":
        print(json.dumps(caching_worker(args)))
        return
    if args.mode == "caching":
        rows = caching(args)
        print(json.dumps(rows, indent=1))
        cached, uncached = rows
        print("\n| variant | s/step | build incl. caches (s) | peak RSS (MB) |\n|---|---|---|---|")
        for r in rows:
            print(f"| {'cached' if r['cached'] else 'uncached'} | {r['s_per_step']} | {r['build_s_incl_cache']} | "
                  f"{r['peak_rss_mb']} |")
        print(f"\ncaching speed-up per step: {uncached['s_per_step'] / cached['s_per_step']:.2f}x")
        return
    result = sd15(args)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
