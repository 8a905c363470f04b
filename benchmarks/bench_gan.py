"""GAN against DDPM, the parts bench_time_to_quality.py and bench_pose_conditioning.py do not cover: generation speed,
and how often a GAN run collapses over seeds, per loss.

    python benchmarks/bench_gan.py speed --ddpm runs/ddpm-portraits --gan runs/gan-portraits/generator
    python benchmarks/bench_gan.py collapse --data runs/ttq/data --minutes 4 --seeds 0 1 2

`speed` times 64 images at batch 64 (the best of 2 runs after a warm-up) from a train_gan.py generator and from a
DDPM pipeline with each --solvers entry (name:steps; the trainers' validation default is ddim:25, `toolkit.sample`'s
dpm:20; a solver's time is linear in its steps, so ddpm:1000 costs 40x ddim:25 and is left out by default).
`collapse` trains train_gan.py for --minutes per (loss, seed) on DATA/train, then reads each run's diversity
history (mean pairwise distance of its validation samples over the training images', every --validation_steps) and
scores KID against DATA/heldout; a run counts as collapsed when its last diversity is under 0.25 (the trainer's own
verdict). Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_time_to_quality import gan_command, log_of, score, table, timed  # noqa: E402

LOSSES = {"ns": ["--gan_loss", "ns"], "hinge": ["--gan_loss", "hinge"],
          "wgan-gp": ["--gan_loss", "wgan", "--gp_weight", "10", "--n_critic", "5"]}


def _best_seconds(make: Callable[[], object], repeats: int = 2) -> float:
    """The fastest of `repeats` calls of `make()`, after one untimed warm-up call."""
    make()
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        make()
        best = min(best, time.perf_counter() - begin)
    return best


def speed(ddpm: Path | None, gan: Path | None, *, solvers: list[str], count: int = 64) -> list[dict]:
    """Milliseconds per image of each model, `count` images in one batch."""
    import torch

    rows = []
    torch.set_grad_enabled(False)
    if gan is not None:
        from toolkit.gan.generate import load_generator
        from toolkit.gan.outputs import generate as generate_gan

        gen = load_generator(str(gan))
        seconds = _best_seconds(lambda: generate_gan(gen, count, seed=0, batch_size=count))
        rows.append({"model": "GAN", "sampler": "one pass", "resolution": gen.config.resolution,
                     "ms_per_image": round(1000 * seconds / count, 2)})
    if ddpm is not None:
        from toolkit.ddpm.generate import load_pipeline
        from toolkit.sampling import generate, make_scheduler

        pipe = load_pipeline(str(ddpm))
        for spec in solvers:
            name, steps = spec.split(":")
            scheduler = make_scheduler(name, pipe.scheduler.config)
            seconds = _best_seconds(partial(generate, pipe.unet.eval(), scheduler, count, seed=0, batch_size=count,
                                            num_inference_steps=int(steps)))
            rows.append({"model": "DDPM", "sampler": spec, "resolution": pipe.unet.config.sample_size,
                         "ms_per_image": round(1000 * seconds / count, 2)})
    fastest = min(r["ms_per_image"] for r in rows)
    return [r | {"x_slowest_vs_fastest": round(r["ms_per_image"] / fastest, 1)} for r in rows]


def collapse(data: Path, out: Path, *, losses: list[str], seeds: list[int], minutes: float, validation_steps: int,
             num_images: int, flags: list[str]) -> list[dict]:
    """One train_gan.py run per (loss, seed), each with its diversity history, collapse verdict and KID."""
    from toolkit.gan.outputs import COLLAPSED_BELOW

    rows = []
    for loss in losses:
        for seed in seeds:
            run = out / f"{loss}_seed{seed}"
            extra = ["--seed", str(seed), "--validation_steps", str(validation_steps), *LOSSES[loss], *flags]
            timed(gan_command(data / "train", run, minutes=minutes, extra=extra), log_of(run))
            summary = json.loads((run / "summary.json").read_text())
            history = [value for _, value in summary["diversity"]] or [float("nan")]
            scored = score(run / "generator", data / "heldout", count=num_images, solver="gan")
            rows.append({"loss": loss, "seed": seed, "steps": summary["steps_done"],
                         "diversity_last": history[-1], "diversity_min": min(history),
                         "diversity_best": max(history), "collapsed": history[-1] < COLLAPSED_BELOW,
                         "kid": scored["kid"], "kid_std": scored["kid_std"]})
            (out / "collapse_partial.json").write_text(json.dumps(rows, indent=2))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("speed", help="ms per image, GAN and DDPM, batch 64")
    p.add_argument("--ddpm", type=Path, help="a train_unet.py output folder (pipeline)")
    p.add_argument("--gan", type=Path, help="a train_gan.py generator folder")
    p.add_argument("--solvers", nargs="+", default=["ddim:25", "dpm:20"])
    p.add_argument("--out", type=Path, help="also write speed.json here")
    p = sub.add_parser("collapse", help="collapse rate over seeds, per loss")
    p.add_argument("--data", type=Path, required=True, help="the folder bench_time_to_quality.py split wrote")
    p.add_argument("--out", type=Path, default=Path("runs/bench-gan-collapse"))
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--validation_steps", type=int, default=200)
    p.add_argument("--num_images", type=int, default=100)
    p.add_argument("--gan_flags", nargs=argparse.REMAINDER, default=[], help="more train_gan.py flags (last)")
    args = parser.parse_args(argv)
    if args.command == "speed":
        if args.ddpm is None and args.gan is None:
            parser.error("speed: give --ddpm, --gan or both")
        rows = speed(args.ddpm, args.gan, solvers=args.solvers)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        rows = collapse(args.data, args.out, losses=args.losses, seeds=args.seeds, minutes=args.minutes,
                        validation_steps=args.validation_steps, num_images=args.num_images, flags=args.gan_flags)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.command}.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
