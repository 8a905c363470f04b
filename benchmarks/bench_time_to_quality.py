"""Time to quality: our train_unet.py against the diffusers example (../shared/peers), same data, same machine, one
after the other; prints JSON and a table.

    python benchmarks/bench_time_to_quality.py split --data ../shared/data/utkface_5k --out runs/ttq/data
    python benchmarks/bench_time_to_quality.py step_time --data runs/ttq/data/train --out runs/ttq/step_time
    python benchmarks/bench_time_to_quality.py curve --data runs/ttq/data --out runs/ttq/curve --minutes 20 60

`split` keeps a held-out fifth of the faces out of training (by a hash of the file name, so it is stable).
`step_time` times whole runs of 5 and 25 steps of each trainer with the same UNet and precision; the difference
over 20 steps is the step time, free of start-up, saving and sampling costs. `curve` trains each trainer under a
wall-time budget, keeps the pipeline each had saved at every time point, samples them all with the same solver and
seeds, and scores KID against the held-out faces (plus MediaPipe face detection); it writes curve.json and
curve.png (KID against wall minutes, one line per trainer), and curve_partial.json as each pipeline is scored.
`--peer_minutes` gives the peers other time points than ours (--minutes); `--ours_flags` takes the rest of the line.
`--gan_minutes` adds one train_gan.py run (`--gan_recipe`) with its EMA generator kept at each time point.
`score` takes DDPM pipelines and train_gan.py generator folders alike (a GAN samples in one pass; --solver is ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from runner import (
    PEERS,
    ROOT,
    latest_generator,
    latest_pipeline,
    log_of,
    run_with_snapshots,
    timed,
)


def split(data: Path, out: Path, *, held_out_every: int = 5) -> dict:
    """Copy the images of `data` (in sub-folders too) into out/train and out/heldout, one in `held_out_every` by a
    hash of the path; copies, not symlinks, since the trainers refuse paths that lead out of the dataset folder."""
    from toolkit.images import list_image_files

    counts = {"train": 0, "heldout": 0}
    for part in counts:
        (out / part).mkdir(parents=True, exist_ok=True)
    for path in list_image_files(data):
        name = "__".join(path.relative_to(data).parts)  # flat and unique: ORL's s1/1.pgm becomes s1__1.pgm
        digest = int(hashlib.sha1(name.encode()).hexdigest(), 16)
        part = "heldout" if digest % held_out_every == 0 else "train"
        if not (out / part / name).exists():
            shutil.copy2(path, out / part / name)
        counts[part] += 1
    return counts


def unet_config(preset: str, resolution: int, folder: Path) -> Path:
    """Write our preset's UNet2DModel config.json into `folder`, for the peer's --model_config_name_or_path."""
    from toolkit.ddpm.model import build_unet

    folder.mkdir(parents=True, exist_ok=True)
    build_unet(preset, resolution).save_config(folder)
    return folder


def ours_command(data: Path, out: Path, *, steps: int | None, minutes: float | None, extra: list[str]) -> list[str]:
    """Our trainer's command line (after the recipe flags in `extra`)."""
    cmd = [sys.executable, str(ROOT / "toolkit" / "train_unet.py"), "--train_data_dir", str(data),
           "--output_dir", str(out), "--overwrite_output_dir", *extra]
    if steps:
        cmd += ["--max_train_steps", str(steps)]
    if minutes:
        cmd += ["--max_train_time", str(minutes)]
    return cmd


def peer_command(data: Path, out: Path, *, epochs: int, extra: list[str]) -> list[str]:
    """The diffusers example's command line; its epoch-0 sample images are made as cheap as it allows."""
    return [sys.executable, str(PEERS / "train_unconditional.py"), "--train_data_dir", str(data),
            "--output_dir", str(out), "--overwrite_output_dir", "--num_epochs", str(epochs), "--use_ema",
            "--save_model_epochs", "1", "--save_images_epochs", "1000", "--ddpm_num_inference_steps", "1",
            "--eval_batch_size", "1", *extra]


def subset(data: Path, count: int, folder: Path) -> Path:
    """A folder of the first `count` images of `data` (copies): the peer's epoch is then its step count."""
    from toolkit.images import list_image_files

    folder.mkdir(parents=True, exist_ok=True)
    for path in list_image_files(data)[:count]:
        if not (folder / path.name).exists():
            shutil.copy2(path, folder / path.name)
    return folder


def step_time(data: Path, out: Path, *, preset: str, resolution: int, batch: int, precision: str) -> list[dict]:
    """Seconds per step of each trainer with the same UNet, batch and precision: (T(25) - T(5)) / 20, each run
    twice in alternation (peer, ours, peer, ours) and the faster of the two kept."""
    config = unet_config(preset, resolution, out / "unet_config")
    common = ["--resolution", str(resolution), "--train_batch_size", str(batch), "--mixed_precision", precision]
    ours = ["--model_config_name_or_path", str(config), "--validation_steps", "1000000", "--num_validation_images",
            "1", "--num_inference_steps", "1", "--checkpointing_steps", "1000000", *common]
    peer = ["--model_config_name_or_path", str(config), *common]
    wall: dict[tuple[str, int], float] = {}
    for _ in range(2):
        for steps in (5, 25):
            for name in ("peer", "ours"):
                run = out / f"{name}_{steps}"
                if name == "ours":
                    cmd = ours_command(data, run, steps=steps, minutes=None, extra=ours)
                else:
                    cmd = peer_command(subset(data, steps * batch, out / f"data_{steps}"), run, epochs=1, extra=peer)
                seconds = timed(cmd, out / f"{name}_{steps}.log")
                wall[name, steps] = min(seconds, wall.get((name, steps), seconds))
    return [{"trainer": name, "preset": preset, "resolution": resolution, "batch": batch, "precision": precision,
             "wall_5": round(wall[name, 5], 1), "wall_25": round(wall[name, 25], 1),
             "s_per_step": round((wall[name, 25] - wall[name, 5]) / 20, 3)} for name in ("peer", "ours")]


def run_ours(data: Path, out: Path, minutes: float, flags: list[str]) -> dict:
    """Our trainer under a `minutes` budget (it plans its schedule for it); its wall time from process start."""
    wall = timed(ours_command(data, out, steps=None, minutes=minutes, extra=flags), log_of(out))
    return {"trainer": "ours", "minutes": minutes, "wall_minutes": round(wall / 60, 2), "pipeline": str(out)}


def run_peer(name: str, data: Path, out: Path, *, epochs: int, flags: list[str], points: list[float]) -> list[dict]:
    """The peer, with the pipeline it saves every epoch kept at each of `points` (minutes)."""
    return run_with_snapshots(name, peer_command(data, out, epochs=epochs, extra=flags), out, points=points,
                              latest=latest_pipeline)


def gan_command(data: Path, out: Path, *, minutes: float, extra: list[str]) -> list[str]:
    """train_gan.py under a `minutes` budget, checkpointing often so that every time point has a recent generator."""
    return [sys.executable, str(ROOT / "toolkit" / "train_gan.py"), "--train_data_dir", str(data),
            "--output_dir", str(out), "--overwrite_output_dir", "--resolution", "64", "--checkpointing_steps", "100",
            "--checkpoints_total_limit", "2", *extra, "--max_train_time", str(minutes)]


def run_gan(data: Path, out: Path, *, flags: list[str], points: list[float]) -> list[dict]:
    """One GAN run for the last of `points` (minutes), its EMA generator kept at each point (a GAN's learning rate
    does not depend on the budget, so one run stands for all of them)."""
    cmd = gan_command(data, out, minutes=max(points), extra=flags)
    shutil.rmtree(out, ignore_errors=True)  # an earlier run's generator must not pass for this one's
    return run_with_snapshots("GAN", cmd, out, points=points, latest=latest_generator)


def _samples(model: Path, count: int, solver: str, seed: int) -> tuple[np.ndarray, str]:
    """`count` samples (N, H, W, 3) uint8 of a saved DDPM pipeline (with `solver`) or a train_gan.py generator
    folder, and a name for the grid file."""
    if (model / "config.json").is_file() and not (model / "model_index.json").is_file():  # a GAN generator
        from toolkit.gan.generate import load_generator
        from toolkit.gan.outputs import generate as generate_gan

        return generate_gan(load_generator(str(model)), count, seed=seed), "gan"
    from toolkit.ddpm.generate import load_pipeline
    from toolkit.sampling import generate, make_scheduler

    pipe = load_pipeline(str(model))
    name, steps = solver.split(":")
    images = generate(pipe.unet.eval(), make_scheduler(name, pipe.scheduler.config), count,
                      num_inference_steps=int(steps), seed=seed, batch_size=50)
    return images, f"{name}{steps}"


def score(pipeline: Path, heldout: Path, *, count: int, solver: str, seed: int = 0) -> dict:
    """KID (x1) of `count` samples (of a DDPM pipeline or a GAN generator) against the held-out faces, and the share
    in which a face is detected."""
    from toolkit.images import list_image_files
    from toolkit.metrics.inception import InceptionFeatures
    from toolkit.metrics.scores import kid
    from toolkit.metrics.sets import default_cache, embed, load_folder
    from toolkit.pose.fidelity import face_rate
    from toolkit.sampling import make_grid

    begin = time.perf_counter()
    images, tag = _samples(pipeline, count, solver, seed)  # (N, H, W, 3) uint8
    sample_seconds = time.perf_counter() - begin
    extractor = InceptionFeatures()
    ref = load_folder(heldout, list_image_files(heldout), images.shape[1], extractor, cache_dir=default_cache())
    mean, std = kid(embed(str(pipeline), list(images), extractor).features, ref.features)
    make_grid(images[:64], cols=8).save(pipeline / f"bench_{tag}.png")
    return {"kid": round(mean, 5), "kid_std": round(std, 5), "face_rate": round(face_rate(images), 3),
            "sample_seconds": round(sample_seconds, 1)}


def plot(rows: list[dict], path: Path) -> None:
    """KID against wall minutes, one line per trainer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name in dict.fromkeys(r["trainer"] for r in rows):
        mine = sorted((r["wall_minutes"], r["kid"]) for r in rows if r["trainer"] == name)
        ax.plot(*zip(*mine, strict=True), marker="o", label=name)
    ax.set(xlabel="wall minutes (2-core CPU)", ylabel="KID vs held-out faces", yscale="log",
           title="time to quality, 64 px faces")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    """A plain-text table of `rows` (dicts sharing keys)."""
    keys = list(rows[0])
    lines = [" | ".join(keys)] + [" | ".join(str(r[k]) for k in keys) for r in rows]
    return "\n".join(lines)


PEER_BEST = ["--mixed_precision", "bf16"]  # plus our UNet config: only the recipe differs


def curve(args: argparse.Namespace) -> list[dict]:
    """Each trainer under the budgets, then every pipeline scored the same way (the rows so far kept in
    `curve_partial.json` as they are scored)."""
    data, out = args.data, args.out
    ours_flags = ["--config", str(args.recipe)] if args.recipe else []
    peer_points = args.peer_minutes or args.minutes
    runs = [run_ours(data / "train", out / f"ours_{m:g}min", m, ours_flags + args.ours_flags) for m in args.minutes]
    if args.peer_epochs:
        config = args.peer_unet or unet_config(args.peer_preset, 64, out / "unet_config")
        runs += run_peer("peer (best flags)", data / "train", out / "peer_best", epochs=args.peer_epochs,
                         flags=["--model_config_name_or_path", str(config), *PEER_BEST], points=peer_points)
    if args.peer_default_epochs:
        runs += run_peer("peer (defaults)", data / "train", out / "peer_default", epochs=args.peer_default_epochs,
                         flags=[], points=peer_points)
    if args.gan_minutes:
        flags = ["--config", str(args.gan_recipe)] if args.gan_recipe else []
        runs += run_gan(data / "train", out / "gan", flags=flags, points=args.gan_minutes)
    rows = []
    for run in runs:
        rows.append(run | score(Path(run["pipeline"]), data / "heldout", count=args.num_images, solver=args.solver))
        (out / "curve_partial.json").write_text(json.dumps(rows, indent=2))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split", help="held-out faces apart from the training faces")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("step_time", help="seconds per step, ours and the peer, same UNet and flags")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="medium")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--precision", default="bf16")
    scoring = sub.add_parser("score", help="KID against held-out faces and face rate of saved pipelines")
    scoring.add_argument("pipelines", type=Path, nargs="+")
    scoring.add_argument("--heldout", type=Path, required=True)
    p = sub.add_parser("curve", help="quality against wall time, ours and the peer")
    for q in (scoring, p):
        q.add_argument("--num_images", type=int, default=200)
        q.add_argument("--solver", default="ddim:50", help="name:steps, the same for every pipeline")
    p.add_argument("--data", type=Path, required=True, help="the folder `split` wrote")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, nargs="*", default=[20.0, 60.0],
                   help="our budgets, one run each (none: skip ours)")
    p.add_argument("--peer_minutes", type=float, nargs="+", help="the peers' time points (default: --minutes)")
    p.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "portraits_64.yaml")
    p.add_argument("--ours_flags", nargs=argparse.REMAINDER, default=[], help="more flags for our trainer (last)")
    p.add_argument("--peer_epochs", type=int, default=0, help="epochs of the best-flags peer (0: skip it); pick "
                                                               "them so that its schedule ends at the last point")
    p.add_argument("--peer_preset", default="small", help="our preset whose UNet config the best-flags peer uses")
    p.add_argument("--peer_unet", type=Path, help="a UNet config folder for the peer instead of --peer_preset")
    p.add_argument("--peer_default_epochs", type=int, default=0, help="epochs of the default peer (0: skip it)")
    p.add_argument("--gan_minutes", type=float, nargs="*", default=[],
                   help="time points of one train_gan.py run as long as the last (none: skip it)")
    p.add_argument("--gan_recipe", type=Path, help="a train_gan.py recipe for that run")
    args = parser.parse_args(argv)
    if args.command == "split":
        print(json.dumps(split(args.data, args.out)))
        return
    if args.command == "score":
        rows = [{"pipeline": str(p)} | score(p, args.heldout, count=args.num_images, solver=args.solver)
                for p in args.pipelines]
        print(json.dumps(rows, indent=2))
        print(table(rows))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "step_time":
        rows = step_time(args.data, args.out, preset=args.preset, resolution=args.resolution, batch=args.batch,
                         precision=args.precision)
    else:
        rows = curve(args)
        plot(rows, args.out / "curve.png")
    (args.out / f"{args.command}.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
