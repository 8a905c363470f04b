"""Training and sampling speed of train_unet.py's UNets on this machine; prints JSON and a table.

    python benchmarks/bench_train_unet.py                 # everything (about 10 minutes on 2 CPU cores)
    python benchmarks/bench_train_unet.py --quick         # a smoke run

Each training measurement runs in its own process so that its peak memory (max RSS) is its own. Weights are random:
only speed and memory are measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time


def bare_training(preset: str, resolution: int, precision: str, batch: int, steps: int) -> dict:
    """img/s of forward + backward + AdamW alone, and the process's peak memory."""
    import resource

    import torch

    from toolkit.ddpm.model import build_unet
    from toolkit.training.precision import set_cpu_threads

    set_cpu_threads(None, 1)
    torch.manual_seed(0)
    unet = build_unet(preset, resolution)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x, t = torch.randn(batch, 3, resolution, resolution), torch.randint(0, 1000, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            pred = unet(x, t).sample
        torch.nn.functional.mse_loss(pred.float(), x).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: oneDNN picks kernels on the first call
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"preset": preset, "resolution": resolution, "precision": precision, "batch": batch,
            "params_M": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
            "img_per_s": round(batch * steps / seconds, 2),
            "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def full_loop(steps: int) -> dict:
    """img/s of the whole train() loop (data, EMA, logging, a checkpoint), validation excluded, vs. bare."""
    from toolkit.config import from_dict
    from toolkit.ddpm.config import TrainUNetConfig
    from toolkit.ddpm.trainer import DDPMTrainer
    from toolkit.training.loop import build, train

    with tempfile.TemporaryDirectory() as out:
        cfg = from_dict(TrainUNetConfig, {"output_dir": out, "max_train_steps": steps, "validation_steps": 10**6,
                                          "checkpointing_steps": steps, "num_validation_images": 1,
                                          "num_inference_steps": 1, "resolution": 32, "conditioning": "none"})
        trainer, reason = build(DDPMTrainer, cfg)
        summary = train(trainer, reason)
    return {"loop_img_per_s": round(summary.images_per_second, 2), "steps": steps,
            "batch": cfg.train_batch_size, "precision": summary.mixed_precision.split()[0]}


def sampling(preset: str, resolution: int, runs: list[tuple[str, int]], images: int) -> list[dict]:
    """Seconds per image of each (solver, steps) on a random-weight UNet."""
    import torch

    from toolkit.ddpm.model import build_unet
    from toolkit.sampling import generate, make_scheduler
    from toolkit.training.precision import set_cpu_threads

    set_cpu_threads(None, 1)
    unet = build_unet(preset, resolution).eval()
    train_config = {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}
    out = []
    for name, steps in runs:
        start = time.perf_counter()
        with torch.inference_mode():
            generate(unet, make_scheduler(name, train_config), images, num_inference_steps=steps, seed=0,
                     batch_size=images)
        seconds = time.perf_counter() - start
        out.append({"preset": preset, "resolution": resolution, "sampler": f"{name}-{steps}",
                    "s_per_image": round(seconds / images, 3)})
    return out


def in_child(job: dict) -> object:
    """Run one job in a fresh Python process and return its JSON result."""
    cmd = [sys.executable, __file__, "--_job", json.dumps(job)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """Rows of one kind as a Markdown table."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows])


def main(argv: list[str] | None = None) -> None:
    """Run the selected measurements and print JSON then Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: a smoke run")
    parser.add_argument("--presets", nargs="+", default=["small", "medium", "ddpm"])
    parser.add_argument("--_job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._job:
        job = json.loads(args._job)
        kind = job.pop("kind")
        print(json.dumps({"bare": bare_training, "loop": full_loop, "sample": sampling}[kind](**job)))
        return
    presets = ["tiny"] if args.quick else args.presets
    train_rows = []
    for preset in presets:
        for resolution in (32, 64):
            for precision in ("fp32", "bf16"):
                steps = 1 if args.quick else (2 if preset == "ddpm" else 5)
                train_rows.append(in_child({"kind": "bare", "preset": preset, "resolution": resolution,
                                            "precision": precision, "batch": 16, "steps": steps}))
    loop = in_child({"kind": "loop", "steps": 3 if args.quick else 200})  # the defaults at 32 px, unconditional
    bare32 = in_child({"kind": "bare", "preset": "small", "resolution": 32, "precision": "bf16",
                       "batch": loop["batch"], "steps": 3 if args.quick else 40})
    loop |= {"bare_img_per_s": bare32["img_per_s"],
             "overhead_pct": round(100 * (bare32["img_per_s"] / loop["loop_img_per_s"] - 1), 1)}
    runs = [("ddpm", 1000), ("ddim", 50), ("dpm", 20)] if not args.quick else [("dpm", 2)]
    sample_rows = [r for res in (32, 64) for r in in_child({"kind": "sample", "preset": presets[0] if args.quick
                                                            else "small", "resolution": res, "runs": runs,
                                                            "images": 4})]
    print(json.dumps({"training": train_rows, "loop": loop, "sampling": sample_rows}, indent=1))
    print("\n" + table(train_rows) + "\n\n" + table([loop]) + "\n\n" + table(sample_rows))


if __name__ == "__main__":
    main()
