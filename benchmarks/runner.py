"""Running the trainers of the benchmarks as a user would, in subprocesses: their environment (the peer's folder
and this checkout importable), logs, wall time, and copies of the model a running trainer last saved, taken at
given wall-clock minutes (`run_with_snapshots`: the peer's per-epoch pipeline, a GAN run's newest generator)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "shared" / "peers"


def child_env() -> dict[str, str]:
    """The environment of the trainers' processes: the peer's folder and this checkout importable."""
    paths = [str(PEERS), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def log_of(out: Path) -> Path:
    return out.parent / f"{out.name}.log"


def timed(cmd: list[str], log: Path) -> float:
    """Run `cmd` to the end with its output in `log`; its wall seconds (an error names the log)."""
    env = child_env()
    start = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if code:
        raise SystemExit(f"{cmd[1]} failed with exit code {code}: see {log}")
    return time.perf_counter() - start


def _weights_open(weights: Path) -> bool:
    """Whether a safetensors file is fully written (it opens and lists its tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            f.keys()
    except (OSError, RuntimeError, ValueError):
        return False
    return True


def _pipeline_ready(folder: Path) -> bool:
    """Whether `folder` holds a fully written DDPM pipeline."""
    return _weights_open(folder / "unet" / "diffusion_pytorch_model.safetensors") and \
        (folder / "model_index.json").is_file()


def _generator_ready(folder: Path) -> bool:
    """Whether `folder` holds a fully written train_gan.py generator (or a checkpoint's generator EMA)."""
    return _weights_open(folder / "diffusion_pytorch_model.safetensors") and (folder / "config.json").is_file()


def latest_pipeline(out: Path) -> Path | None:
    """The pipeline the peer last saved (it overwrites one in place every epoch), if it is complete now."""
    return out if _pipeline_ready(out) else None


def latest_generator(out: Path) -> Path | None:
    """The GAN run's final generator, else the EMA generator of its newest checkpoint (written atomically)."""
    if _generator_ready(out / "generator"):
        return out / "generator"
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
    for checkpoint in reversed(checkpoints):
        for name in ("generator_ema", "generator"):
            if _generator_ready(checkpoint / name):
                return checkpoint / name
    return None


PIPELINE_PARTS = ("unet", "scheduler", "model_index.json")  # what scoring needs of a peer's output folder


def _snapshot(source: Path, target: Path) -> bool:
    """Copy the model at `source` (a pipeline's parts, or a whole generator folder) to `target`; False if it was
    being overwritten meanwhile (the copy is then checked and dropped)."""
    pipeline = (source / "model_index.json").is_file()
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        for name in PIPELINE_PARTS if pipeline else [p.name for p in source.iterdir()]:
            (shutil.copytree if (source / name).is_dir() else shutil.copy2)(source / name, target / name)
    except OSError:  # replaced while being copied: try again
        shutil.rmtree(target)
        return False
    if (_pipeline_ready if pipeline else _generator_ready)(target):
        return True
    shutil.rmtree(target)
    return False


def run_with_snapshots(name: str, cmd: list[str], out: Path, *, points: list[float],
                       latest: Callable[[Path], Path | None]) -> list[dict]:
    """Run `cmd` from process start and, at each of `points` (minutes), keep a copy of the model it last saved
    (`latest(out)`); stop it after the last point."""
    rows, start = [], time.perf_counter()
    with log_of(out).open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        try:
            for minute in sorted(points):
                target = out.parent / f"{out.name}_at_{minute:g}min"
                while True:
                    elapsed = time.perf_counter() - start
                    code = proc.poll()
                    if code:
                        raise SystemExit(f"{name} failed with exit code {code}: see {log_of(out)}")
                    if elapsed >= 60 * minute or code == 0:
                        source = latest(out)
                        if source is not None and _snapshot(source, target):
                            break
                        if code == 0 and source is None:
                            raise SystemExit(f"{name} ended without a saved model: see {log_of(out)}")
                    time.sleep(2)
                rows.append({"trainer": name, "minutes": minute, "wall_minutes": round(elapsed / 60, 2),
                             "pipeline": str(target)})
        finally:  # never leave the trainer running (an error, Ctrl-C, or the last point reached)
            proc.kill()
            proc.wait()
    return rows
