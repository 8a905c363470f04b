"""Atomic, rotated training checkpoints on top of Accelerate's save_state / load_state.

A checkpoint is written to `.checkpoint-N.tmp` and renamed to `checkpoint-N` only when complete, so a kill at any
moment (during a save included) leaves the previous checkpoints intact and never a half-written `checkpoint-N`.
Old checkpoints are removed only after the new one is in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from safetensors import SafetensorError

from toolkit.errors import UserError
from toolkit.training.distributed import any_process

STATE_FILE = "trainer_state.json"
# What a failed write raises: a full disk, a quota or a lost mount (torch.save reports them as RuntimeError,
# safetensors as SafetensorError).
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int:
    """The step of a `checkpoint-N` folder."""
    return int(_NAME.match(path.name).group(1))


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def resolve_resume(root: str | Path, requested: str | None) -> Path | None:
    """The checkpoint to resume from: `latest` (None if there is none yet) or an explicit folder."""
    if requested is None:
        return None
    if requested == "latest":
        found = list_checkpoints(root)
        return found[-1] if found else None
    path = Path(requested)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"resume_from_checkpoint: {path} is not a complete checkpoint (no {STATE_FILE})")
    return path


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())


def save_checkpoint(accelerator, root: str | Path, step: int, state: dict, *, total_limit: int | None) -> Path:
    """Save Accelerate state plus `state` (JSON) as `root/checkpoint-{step}` atomically, then rotate."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / f"checkpoint-{step}", root / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    error = None
    try:
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps({"global_step": step, **state}, indent=2))
            _fsync_tree(tmp)
    except WRITE_ERRORS as e:
        error = f"{type(e).__name__}: {e}"
    if any_process(accelerator, error is not None):  # every process gives the checkpoint up, none waits for it
        _give_up(accelerator, root, tmp, step, error)
    if accelerator.is_main_process:
        if final.exists():  # re-saving the same step (e.g. after a resume): move the old one aside first
            old = root / f".checkpoint-{step}.old"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
        _rotate(root, total_limit)
    accelerator.wait_for_everyone()
    return final


def _give_up(accelerator, root: Path, tmp: Path, step: int, error: str | None) -> None:
    """Remove a checkpoint whose write failed on some process and stop with a message naming the one still latest."""
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    kept = list_checkpoints(root)
    raise UserError(f"could not write checkpoint-{step} in {root} ({error or 'failed on another process'}); "
                    f"nothing of it was kept, and the latest complete checkpoint is still "
                    f"{kept[-1] if kept else 'none'}. Free space and resume with --resume_from_checkpoint latest")


def _rotate(root: Path, total_limit: int | None) -> None:
    if total_limit is None:
        return
    for stale in list_checkpoints(root)[:-total_limit]:
        shutil.rmtree(stale)


def keep_only(root: str | Path, keep: str | None) -> None:
    """Delete every checkpoint under `root` except the one named `keep` (e.g. the best one), and leftovers."""
    remove_partial(root)
    for path in list_checkpoints(root):
        if path.name != keep:
            shutil.rmtree(path)


def load_checkpoint(accelerator, path: str | Path) -> dict:
    """Restore Accelerate state from `path` and return its trainer state (global_step and extras)."""
    path = Path(path)
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())


def remove_partial(root: str | Path) -> list[Path]:
    """Delete leftovers of saves that were interrupted (`.checkpoint-*.tmp`); returns what was removed."""
    root = Path(root)
    stale = list(root.glob(".checkpoint-*.tmp")) + list(root.glob(".checkpoint-*.old")) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale
