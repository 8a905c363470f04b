"""What every trainer does around its loop: an Accelerator with the resolved precision, and resume-or-start."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from toolkit.errors import UserError
from toolkit.training.checkpoints import list_checkpoints, load_checkpoint, remove_partial, resolve_resume
from toolkit.training.precision import resolve_mixed_precision, set_cpu_threads


def make_accelerator(cfg, out: Path) -> tuple[Accelerator, str]:
    """An Accelerator with the resolved precision and trackers (cfg: mixed_precision, report_to, logging_dir,
    allow_tf32, num_cpu_threads); returns it and the precision reason."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision, reason = resolve_mixed_precision(cfg.mixed_precision, device_type)
    trackers = {"none": None, "all": ["tensorboard", "wandb"]}.get(cfg.report_to, [cfg.report_to])
    if trackers and "wandb" in trackers:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError("--report_to wandb needs wandb: pip install 'anatomy-toolkit[wandb]'") from None
    project = ProjectConfiguration(project_dir=str(out), logging_dir=str(out / cfg.logging_dir))
    accelerator = Accelerator(mixed_precision=precision, log_with=trackers, project_config=project)
    if cfg.allow_tf32 and device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if device_type == "cpu":
        accelerator.print(set_cpu_threads(cfg.num_cpu_threads, accelerator.num_processes))
    return accelerator, reason


def maybe_resume(accelerator: Accelerator, out: Path, resume_from_checkpoint: str | None,
                 overwrite_output_dir: bool) -> tuple[int, str | None, dict]:
    """(step, checkpoint path, saved state) to continue from; (0, None, {}) for a fresh run."""
    ckpt_root = out / "checkpoints"
    remove_partial(ckpt_root)
    path = resolve_resume(ckpt_root, resume_from_checkpoint)
    if resume_from_checkpoint == "latest" and path is None:
        accelerator.print(f"no checkpoint in {ckpt_root} yet: starting a new run")
    if path is None:
        _refuse_to_mix_runs(out, ckpt_root, overwrite_output_dir)
        return 0, None, {}
    state = load_checkpoint(accelerator, path)
    accelerator.print(f"resumed from {path} at step {state['global_step']}")
    return int(state["global_step"]), str(path), state


def _refuse_to_mix_runs(out: Path, ckpt_root: Path, overwrite_output_dir: bool) -> None:
    """A fresh run must not rotate away, or later resume from, another run's checkpoints."""
    old = list_checkpoints(ckpt_root)
    if not old:
        return
    if not overwrite_output_dir:
        raise UserError(f"{out} already holds checkpoints of an earlier run ({old[-1].name}): pass "
                        "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to start over, "
                        "or another --output_dir")
    for path in old:
        shutil.rmtree(path)


def report(summary, cfg, publish) -> int:
    """After training, on the main process only: print the summary, and publish (or stage) if asked."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    print("\nrun finished:\n" + summary.table())
    if cfg.push_to_hub or cfg.hub_dry_run:
        print(publish(cfg, summary))
    return 0
