"""Augmentation and structure losses, one change at a time, at equal wall time and over seeds; prints JSON and a table.

    python benchmarks/bench_augmentation.py faces --data runs/ttq/data --out runs/aug/faces --minutes 10 \
        --train_images 1000 --seeds 0 1
    python benchmarks/bench_augmentation.py figures --out runs/aug/figures --minutes 10 --seeds 0 1

`faces`: train_unet.py with recipes/portraits_64.yaml on the first --train_images faces of the `split` folder's
train half, each variant and seed under the same --minutes budget, then KID of --num_images samples against the
held-out faces and the share with a detected face (bench_time_to_quality.py's `score`).
`figures`: bench_pose_conditioning.py's pose-weighted run (c) per variant and seed, scored by distortion rate and
PCK@0.1 on held-out poses. Both record steps done and seconds per step, so the cost of each loss shows.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from bench_time_to_quality import ROOT, ours_command, score, subset, table
from runner import log_of, timed

# name: the flags that differ from the recipe. Flips are on in the faces recipe ("no_flip" measures them) and off
# by default for the figures ("flip" measures them); zoom, rotation, shift and colour are told to the UNet
# (--augment_conditioning, on by default).
VARIANTS = {
    "base": [],
    "no_flip": ["--no-random_flip"],
    "flip": ["--random_flip"],
    "color": ["--aug_color_p", "0.5"],
    "scale": ["--aug_scale_p", "0.3"],
    "rotate": ["--aug_rotate_p", "0.3"],
    "translate": ["--aug_translate_p", "0.3"],
    "ssim": ["--ssim_loss_weight", "0.5"],
    "lpips": ["--lpips_loss_weight", "0.5"],
    # The best combination: the one loss that won, with the two augmentations that scored best alone on seed 0.
    "lpips_geo": ["--lpips_loss_weight", "0.5", "--aug_scale_p", "0.3", "--aug_rotate_p", "0.3"],
}


def _steps(run: Path) -> dict:
    """Steps done and seconds per step of a finished run, from its summary.json."""
    summary = json.loads((run / "summary.json").read_text())
    return {"steps": summary["steps_done"],
            "s_per_step": round(summary["train_seconds"] / max(summary["steps_done"], 1), 3)}


def faces(args: argparse.Namespace) -> list[dict]:
    """Each variant and seed on the faces, scored by KID and face rate (rows kept in partial.json as they come)."""
    data = subset(args.data / "train", args.train_images, args.out / f"train_{args.train_images}")
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            run = args.out / f"{name}_s{seed}"
            flags = ["--config", str(ROOT / "recipes" / "portraits_64.yaml"), "--seed", str(seed), *VARIANTS[name]]
            timed(ours_command(data, run, steps=None, minutes=args.minutes, extra=flags), log_of(run))
            rows.append({"variant": name, "seed": seed, **_steps(run),
                         **score(run, args.data / "heldout", count=args.num_images, solver=args.solver)})
            (args.out / "partial.json").write_text(json.dumps(rows, indent=2))
    return rows


def figures(args: argparse.Namespace) -> list[dict]:
    """Each variant and seed as bench_pose_conditioning.py's run (c), scored by distortion rate and PCK@0.1."""
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            out = args.out / f"{name}_s{seed}"
            flags = "--prediction_type sample --snr_gamma none " + shlex.join(VARIANTS[name])
            cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_pose_conditioning.py"), "--output_dir",
                   str(out), "--minutes", str(args.minutes), "--runs", "c_pose_weighted", "--seed", str(seed),
                   "--num_samples", str(args.num_images), "--train_flags", flags]
            with log_of(out).open("w") as log:
                subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
            result = json.loads((out / "results_ddim50.json").read_text())["c_pose_weighted"]
            rows.append({"variant": name, "seed": seed, **_steps(out / "c_pose_weighted"),
                         "distortion_rate": result["distortion_rate"], "pck": result["pck"],
                         "flags_per_image": result["flags_per_image"]})
            (args.out / "partial.json").write_text(json.dumps(rows, indent=2))
    return rows


def means(rows: list[dict], keys: list[str]) -> list[dict]:
    """Per variant: the mean (and the spread over seeds) of each of `keys`."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        row = {"variant": name, "seeds": len(mine)}
        for key in keys:
            values = [r[key] for r in mine if r[key] is not None]
            row[key] = round(statistics.fmean(values), 4) if values else None
            row[f"{key}_range"] = round(max(values) - min(values), 4) if len(values) > 1 else None
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("testbed", choices=["faces", "figures"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="faces: the folder bench_time_to_quality.py `split` wrote")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-time budget of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train_images", type=int, default=1000, help="faces: training images (a small set)")
    parser.add_argument("--num_images", type=int, default=200, help="samples scored per run")
    parser.add_argument("--solver", default="ddim:25", help="faces: name:steps, the validation default")
    args = parser.parse_args(argv)
    if args.testbed == "faces" and args.data is None:
        parser.error("faces needs --data (the split folder)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = faces(args) if args.testbed == "faces" else figures(args)
    keys = ["kid", "face_rate", "s_per_step"] if args.testbed == "faces" else \
        ["distortion_rate", "pck", "s_per_step"]
    summary = means(rows, keys)
    (args.out / "results.json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                                       "runs": rows, "means": summary}, indent=2))
    print(json.dumps(summary, indent=2))
    print(table(summary))


if __name__ == "__main__":
    main()
