"""The GPU check: one prepared run for any session lent a GPU (under 8 minutes on one H200), which also runs as a dry
run on any CPU in about a minute with toy models (tests/test_gpu_check.py runs it), so it is known to work before a
GPU is ever lent.

    benchmarks/gpu_check.sh                      # on the GPU machine (the script says which wheels to carry)
    benchmarks/gpu_check.sh --dry_run            # anywhere: toy sizes on the CPU
    python benchmarks/gpu_check.py --record OUT/gpu_check.json   # back here: append its dated table to docs/gpu.md

Three parts, each in a process of its own with a time limit, so that one failure is recorded and the rest go on:
1. `lora`: pose-LoRA training steps at SD 1.5 size (random weights) under a ControlNet, 512 px, fp16 with fp32 LoRA
   weights; batch 1 and 4, PyTorch SDPA and xformers, gradient checkpointing off and on: s/step and peak VRAM.
2. `unet`: train_unet.py's optimiser step through the real trainer (data, loss, EMA) for the `medium` and `ddpm`
   presets at 64 px, fp16 and bf16.
3. `e2e`: a 2-minute train_unet.py run on the built-in figures in fp16, stopped with SIGTERM after its first
   checkpoint, resumed to the end of its budget; the saved pipeline is then loaded and sampled.
Writes OUTPUT/gpu_check.json and OUTPUT/gpu_check.md (the table), and prints both.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"lora": 120, "unet": 100, "e2e": 240}  # caps per part on the GPU (460 s); expected about 6 minutes in all
UNET_RUNS = [(preset, precision) for preset in ("medium", "ddpm") for precision in ("fp16", "bf16")]


def part_lora(dry: bool) -> list[dict]:
    """SD 1.5-size LoRA steps under every attention x checkpointing x batch setting, models built once."""
    import torch
    from bench_pose_lora import sd15_models, sd15_step_time, set_attention, set_checkpointing

    device = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.float16  # a CPU dry run skips autocast
    models = sd15_models(device, dtype, 16, toy=dry)
    rows = []
    for attention in ("sdpa", "xformers"):
        try:
            set_attention(models[:2], attention)
        except (ImportError, ModuleNotFoundError, RuntimeError, ValueError) as e:
            rows.append({"attention": attention, "error": f"{type(e).__name__}: {str(e)[:160]}"})
            continue
        for checkpointing in (False, True):
            set_checkpointing(models[:2], checkpointing)
            for batch in (1, 4):
                result = sd15_step_time(models, device=device, dtype=dtype, batch_size=batch, steps=1 if dry else 5,
                                        resolution=64 if dry else 512)
                rows.append({"attention": attention, "gradient_checkpointing": checkpointing, **result})
    return rows


def part_unet(dry: bool) -> list[dict]:
    """train_unet.py's step time (warm-up excluded) and peak memory, per preset and precision."""
    import torch
    from accelerate.state import AcceleratorState

    from toolkit.config import from_dict
    from toolkit.ddpm.config import TrainUNetConfig
    from toolkit.ddpm.trainer import DDPMTrainer
    from toolkit.training.loop import build, optimizer_step

    rows, steps = [], 1 if dry else 20
    for preset, precision in [("tiny", "bf16")] if dry else UNET_RUNS:
        with tempfile.TemporaryDirectory() as out:
            cfg = from_dict(TrainUNetConfig, {
                "output_dir": out, "model_preset": preset, "resolution": 32 if dry else 64,
                "train_batch_size": 2 if dry else 64, "mixed_precision": precision, "num_figures": 8 if dry else 512,
                "report_to": "none", "max_train_steps": 1000, "conditioning": "none"})  # as the peer: unconditional
            trainer, _ = build(DDPMTrainer, cfg)
            batches, sync = trainer.batches(0), torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
            for step in range(3):  # warm-up: kernels chosen, the GradScaler settled
                optimizer_step(trainer, step, next(batches))
            sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for step in range(3, 3 + steps):
                optimizer_step(trainer, step, next(batches))
            sync()
            seconds = (time.perf_counter() - start) / steps
            rows.append({"preset": preset, "precision": trainer.accelerator.mixed_precision,
                         "batch": cfg.train_batch_size, "resolution": cfg.resolution, "s_per_step": round(seconds, 4),
                         "img_per_s": round(cfg.train_batch_size / seconds, 1),
                         "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available()
                         else None})
            AcceleratorState._reset_state(reset_partial_state=True)
    return rows


def part_e2e(dry: bool, output: Path) -> dict:
    """The fp16 run stopped by SIGTERM after its first checkpoint and resumed: exit codes, steps, throughput, and a
    sample from the saved pipeline; its final grid is copied to OUTPUT/e2e_final.png."""
    with tempfile.TemporaryDirectory() as tmp:  # the run folder stays out of OUTPUT, which travels back
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "toolkit.train_unet", "--output_dir", str(run), "--mixed_precision", "fp16",
               "--conditioning", "none"]  # unconditional, so that stock DDPMPipeline samples it
        cmd += (["--model_preset", "tiny", "--num_figures", "32", "--max_train_time", "0.3", "--checkpointing_steps",
                 "3", "--num_validation_images", "2", "--num_inference_steps", "2"] if dry
                else ["--max_train_time", "2", "--checkpointing_steps", "200"])
        start = time.perf_counter()
        log = Path(tmp) / "first.log"  # a file, not a pipe: a full pipe would stall the run before its checkpoint
        with log.open("w") as out:
            first = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            while first.poll() is None and not list((run / "checkpoints").glob("checkpoint-*")):
                time.sleep(0.5)
            first.send_signal(signal.SIGTERM)
            first.wait()
        err = log.read_text(errors="replace").replace("\r", "\n")
        stopped = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        resumed = subprocess.run([*cmd, "--resume_from_checkpoint", "latest"], cwd=ROOT, capture_output=True,
                                 text=True)
        if resumed.returncode:
            raise RuntimeError(f"the resumed run failed: {resumed.stderr[-600:]}")
        summary = json.loads((run / "summary.json").read_text())
        if (run / "samples" / "final.png").is_file():
            shutil.copy(run / "samples" / "final.png", output / "e2e_final.png")
        said = [line for line in err.splitlines() if "SIGTERM" in line or "stopped by" in line]
        return {"first_exit_code": first.returncode, "first_said": said[:2],
                "stopped_at": stopped.get("start_step", 0) + stopped.get("steps_done", 0),
                "interrupted_by": stopped.get("interrupted_by"), "resumed_at": summary["start_step"],
                "final_step": summary["start_step"] + summary["steps_done"], "planned_steps": summary["total_steps"],
                "img_per_s": round(summary["images_per_second"], 1), "wall_s": round(time.perf_counter() - start, 1),
                "sample": _sample(run)}


def _sample(run: Path) -> dict:
    """Load the saved pipeline with stock diffusers and make four images (DDIM, 10 steps)."""
    import numpy as np
    import torch
    from diffusers import DDIMScheduler, DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(run)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    images = pipe(batch_size=4, num_inference_steps=10, output_type="np").images
    return {"shape": list(images.shape), "finite": bool(np.isfinite(images).all()),
            "std": round(float(images.std()), 3)}


def run_part(name: str, dry: bool, output: Path) -> dict:
    """One part in its own process under its time limit: {"result": ...} or {"error": ...}, with its seconds."""
    cmd = [sys.executable, __file__, "--part", name, "--output", str(output)] + (["--dry_run"] if dry else [])
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMITS[name] * (3 if dry else 1),
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"over its {LIMITS[name]} s limit", "seconds": round(time.perf_counter() - start, 1)}
    seconds = round(time.perf_counter() - start, 1)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300], "seconds": seconds}
    return {"result": json.loads(lines[-1]), "seconds": seconds}


def environment(dry: bool) -> dict:
    """The machine and the library versions."""
    import diffusers
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"date": time.strftime("%Y-%m-%d"), "dry_run": dry, "device": gpu or "CPU (dry run)",
            "torch": torch.__version__, "diffusers": diffusers.__version__}


def markdown(report: dict) -> str:
    """The dated tables of one check, for docs/gpu.md."""
    env = report["environment"]
    lines = [f"### {env['date']}: {env['device']}{' (dry run, toy sizes)' if env['dry_run'] else ''}", "",
             f"torch {env['torch']}, diffusers {env['diffusers']}; `benchmarks/gpu_check.sh`, "
             f"{report['seconds']:.0f} s in all.", ""]
    for name, title in (("lora", "Pose LoRA at SD 1.5 size, 512 px, fp16 with fp32 LoRA weights"),
                        ("unet", "train_unet.py step at 64 px"), ("e2e", "2-minute fp16 run, SIGTERM, resume")):
        part = report["parts"][name]
        lines += [f"**{title}** ({part['seconds']:.0f} s)", ""]
        if "error" in part:
            lines += [f"failed: {part['error']}", ""]
            continue
        rows = part["result"] if isinstance(part["result"], list) else [part["result"]]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows] + [""]
    return "\n".join(lines)


def record(report_file: Path, docs: Path) -> None:
    """Append a check's table to `docs` (docs/gpu.md), creating the page if needed."""
    report = json.loads(report_file.read_text())
    if not docs.is_file():
        docs.write_text("# GPU checks\n\nEach section is one run of `benchmarks/gpu_check.sh` on a lent GPU "
                        "(`benchmarks/gpu_check.py` says what it measures), appended with `python "
                        "benchmarks/gpu_check.py --record`.\n\n")
    with docs.open("a") as f:
        f.write(markdown(report) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run the check (or one part of it, or --record), writing and printing the JSON and the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry_run", action="store_true", help="toy sizes on the CPU: checks the script itself")
    parser.add_argument("--output", default="runs/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--record", help="append the table of this gpu_check.json to --docs, then exit")
    parser.add_argument("--docs", default=str(ROOT / "docs" / "gpu.md"))
    parser.add_argument("--part", choices=list(LIMITS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(1, str(ROOT))  # the toolkit from this checkout, installed or not (a GPU machine has it bare)
    output = Path(args.output).resolve()
    if args.record is not None:
        record(Path(args.record), Path(args.docs))
        return
    if args.part:
        work = {"lora": lambda: part_lora(args.dry_run), "unet": lambda: part_unet(args.dry_run),
                "e2e": lambda: part_e2e(args.dry_run, output)}[args.part]
        print(json.dumps(work()))
        return
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    parts = {name: run_part(name, args.dry_run, output) for name in LIMITS}
    report = {"environment": environment(args.dry_run), "parts": parts,
              "seconds": round(time.perf_counter() - start, 1)}
    (output / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (output / "gpu_check.md").write_text(markdown(report))
    print(json.dumps(report, indent=1))
    print("\n" + markdown(report))


if __name__ == "__main__":
    main()
