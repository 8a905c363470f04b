"""Does pose conditioning reduce limb distortion, and does the pose-weighted loss improve pose fidelity?

Trains three UNet2DModels of the same size for the same number of steps (or wall time) on the synthetic figures,
(a) unconditional, (b) pose-conditioned, (c) pose-conditioned with the pose-weighted loss, then generates
--num_samples images from each ((b) and (c) from held-out poses) and scores them with the figures parser.
`--runs d_gan,e_gan_pose` adds train_gan.py's residual SN-GAN, unconditional and pose-conditioned, on the same
figures for the same budget (`--gan_flags` for its options).

    python benchmarks/bench_pose_conditioning.py --output_dir runs/bench-pose   # about 70 min on 2 CPU cores
    python benchmarks/bench_pose_conditioning.py --skip_training --scheduler dpm --num_inference_steps 20
    python benchmarks/bench_pose_conditioning.py --minutes 40 --train_flags "--prediction_type sample --snr_gamma none"
    python benchmarks/bench_pose_conditioning.py --minutes 10 --runs b_pose,e_gan_pose

Prints JSON and a table; writes OUTPUT_DIR/results.json and a comparison grid OUTPUT_DIR/comparison.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

RUNS = {"a_unconditional": {"conditioning": "none"}, "b_pose": {"conditioning": "pose"},
        "c_pose_weighted": {"conditioning": "pose", "pose_loss_weight": 4.0},
        "d_gan": {"trainer": "gan"}, "e_gan_pose": {"trainer": "gan", "conditioning": "pose"}}
DEFAULT_RUNS = "a_unconditional,b_pose,c_pose_weighted"


def train(name: str, extra: dict, args) -> float:
    """Train one configuration in a subprocess (as a user would), for --steps or under a --minutes budget; returns
    wall seconds."""
    extra = dict(extra)
    gan = extra.pop("trainer", None) == "gan"
    length = {"max_train_time": args.minutes} if args.minutes else {"max_train_steps": args.steps}
    every = 500 if args.minutes else args.steps // 2
    flags = {"output_dir": f"{args.output_dir}/{name}", "resolution": args.resolution,
             **({} if gan else {"model_preset": args.preset}), "train_batch_size": args.batch_size, **length,
             "num_figures": args.num_figures, "validation_steps": every, "checkpointing_steps": every,
             "seed": args.seed, "overwrite_output_dir": True, **extra}
    argv = [f"--{k}" if v is True else f"--{k}={v}" for k, v in flags.items()]
    argv += shlex.split(args.gan_flags if gan else args.train_flags)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "toolkit.train_gan" if gan else "toolkit.train_unet", *argv], check=True)
    return time.perf_counter() - start


def sample(name: str, conditioned: bool, poses: Path, args) -> Path:
    """Generate the evaluation images of one run (a DDPM with the chosen solver, a GAN in one pass); returns their
    folder."""
    run = Path(args.output_dir) / name
    common = ["--num_images", str(args.num_samples), "--batch_size", "64", "--seed", "1234"]
    if RUNS[name].get("trainer") == "gan":
        out = run / "eval_samples_gan"
        argv = ["gan", "--generator", str(run / "generator"), "--output_dir", str(out), *common]
    else:
        out = run / f"eval_samples_{args.scheduler}{args.num_inference_steps}"
        argv = ["--pipeline", str(run), "--output_dir", str(out), *common, "--scheduler", args.scheduler,
                "--num_inference_steps", str(args.num_inference_steps)]
    if conditioned:
        argv += ["--poses", str(poses)]
    subprocess.run([sys.executable, "-m", "toolkit.sample", *argv], check=True)
    return out


def main() -> None:
    from toolkit.anatomy.report import evaluate_images
    from toolkit.figures.dataset import write_dataset
    from toolkit.images import list_image_files

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/bench-pose")
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--minutes", type=float, help="a wall-time budget per run (--max_train_time) instead of --steps")
    parser.add_argument("--train_flags", default="", help="more train_unet.py flags for every run, last, e.g. "
                                                          "'--prediction_type sample --snr_gamma none'")
    parser.add_argument("--gan_flags", default="", help="more train_gan.py flags for the GAN runs, last")
    parser.add_argument("--num_figures", type=int, default=10000)
    parser.add_argument("--num_samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated, from " + ",".join(RUNS))
    parser.add_argument("--scheduler", default="ddim", help="solver for the evaluation samples")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--skip_training", action="store_true", help="re-sample and score runs already trained")
    args = parser.parse_args()
    runs = args.runs.split(",")
    if set(runs) - set(RUNS):
        parser.error(f"--runs: unknown {sorted(set(runs) - set(RUNS))}; choose from {', '.join(RUNS)}")
    tag = f"{args.scheduler}{args.num_inference_steps}"

    held_out = write_dataset(Path(args.output_dir) / "held_out", args.num_samples, args.resolution, seed=99)
    results = {"settings": vars(args), "held_out_renders": _summary(evaluate_images(
        list_image_files(held_out), held_out / "keypoints"))}
    for name in runs:
        seconds = None if args.skip_training else round(train(name, RUNS[name], args), 1)
        conditioned = "conditioning" in RUNS[name]
        folder = sample(name, conditioned, held_out / "keypoints", args)
        report = evaluate_images(sorted(folder.glob("[0-9]*.png")), held_out / "keypoints" if conditioned else None)
        (Path(args.output_dir) / name / f"anatomy_report_{tag}.json").write_text(json.dumps(report, indent=1))
        results[name] = {"train_seconds": seconds, **_summary(report)}
    (Path(args.output_dir) / f"results_{tag}.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    print(_table(results))


def _summary(report: dict) -> dict:
    return {"distortion_rate": report["distortion_rate"], "breakdown": report["breakdown"], "pck": report["pck"],
            "flags_per_image": report["flags_per_image"], "num_images": report["num_images"]}


def _table(results: dict) -> str:
    rows = ["| run | distortion rate | missing | extra | broken | wrong length | flags / image | PCK@0.1 | train s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name == "settings":
            continue
        b = r["breakdown"]
        pck = "n/a" if r["pck"] is None else f"{r['pck']:.3f}"
        rows.append(f"| {name} | {r['distortion_rate']:.3f} | {b['missing']:.3f} | {b['extra']:.3f} | "
                    f"{b['broken']:.3f} | {b['wrong_length']:.3f} | {r['flags_per_image']:.2f} | {pck} | "
                    f"{r.get('train_seconds') or '-'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
