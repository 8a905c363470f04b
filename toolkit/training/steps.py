"""One optimiser step of every phase (accumulation, clipping, the LR schedule, EMA) and the NaN/inf policy.

A step whose loss is NaN or inf on any process makes no update: its gradients are dropped, the weights and EMA
stay as they were, and the LR schedule still advances so that it stays on the step count (and resume stays exact).
`NonFiniteSteps` counts such steps and stops the run after `--max_nan_steps` of them in a row, naming the last good
checkpoint; a lone bad batch therefore costs one step, a diverged run stops within a few.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from toolkit.errors import UserError
from toolkit.training.checkpoints import checkpoint_step, list_checkpoints
from toolkit.training.distributed import any_process
from toolkit.training.runs import step_generator

if TYPE_CHECKING:
    from toolkit.training.loop import Phase, StepBatch, Trainer


class TrainingDiverged(UserError):
    """The loss stayed NaN or infinite for --max_nan_steps steps in a row."""


def optimizer_step(trainer: Trainer, step: int, batch: StepBatch) -> dict[str, tuple[float, float]]:
    """One optimiser step of every phase due at `step`, over the batch's micro-batches; returns
    {phase: (loss, grad norm)}, both NaN for a phase whose step was skipped (a NaN/inf loss on any process)."""
    generator = step_generator(trainer.cfg.seed, step, trainer.accelerator)
    return {phase.name: _phase_step(trainer, phase, batch, generator)
            for phase in trainer.phases if step % phase.every == 0}


def _phase_step(trainer: Trainer, phase: Phase, batch: StepBatch, generator: torch.Generator) -> tuple[float, float]:
    """Accumulate the phase's loss over the micro-batches, then clip and step, or skip when it is not finite."""
    acc, rounds, total = trainer.accelerator, len(batch.micro_batches), 0.0
    phase.optimizer.zero_grad(set_to_none=True)  # drop gradients another phase's loss left on these params
    for i, micro in enumerate(batch.micro_batches):
        with contextlib.ExitStack() as syncing:
            if i < rounds - 1:  # all-reduce gradients only on the last round
                for module in phase.modules:
                    syncing.enter_context(acc.no_sync(module))
            loss = trainer.loss(phase, micro, generator) / rounds
            acc.backward(loss)
        total += loss.item()
    bad = any_process(acc, not math.isfinite(total))  # every process skips, or none: the weights stay in step
    if not bad:
        max_norm = phase.max_grad_norm if phase.max_grad_norm is not None else trainer.cfg.max_grad_norm
        grad_norm = float(acc.clip_grad_norm_(phase.params, max_norm or float("inf")))  # alike on every process
        bad = acc.scaler is None and not math.isfinite(grad_norm)  # fp16's scaler skips overflowing steps itself
    if bad:
        phase.optimizer.zero_grad(set_to_none=True)
        phase.lr_scheduler.step()
        return float("nan"), float("nan")
    phase.optimizer.step()
    phase.lr_scheduler.step()
    phase.optimizer.zero_grad(set_to_none=True)
    if phase.ema is not None:
        phase.ema.step(phase.ema_params if phase.ema_params is not None else phase.params)
    return total, grad_norm


def step_logs(trainer: Trainer, results: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Scalars of one step: loss, lr and grad norm, prefixed by the phase name when there are several phases."""
    logs = {}
    for phase in (p for p in trainer.phases if p.name in results):
        prefix = f"{phase.name}/" if len(trainer.phases) > 1 else ""
        loss, grad_norm = results[phase.name]
        logs |= {f"{prefix}loss": loss, f"{prefix}lr": phase.lr_scheduler.get_last_lr()[0],
                 f"{prefix}grad_norm": grad_norm}
    return logs


@dataclass
class NonFiniteSteps:
    """The NaN/inf policy's count: `record` each step's results; `limit` skipped steps in a row stop the run."""

    limit: int
    checkpoints: Path
    skipped: int = 0  # over the run (kept in checkpoints)
    in_row: int = 0
    first: int = 0  # the first step of the current streak

    def record(self, step: int, results: dict[str, tuple[float, float]]) -> None:
        """Count step `step` (1-based) if it was skipped; raises TrainingDiverged at the limit."""
        if all(math.isfinite(loss) for loss, _ in results.values()):
            self.in_row = 0
            return
        self.skipped, self.in_row = self.skipped + 1, self.in_row + 1
        self.first = step if self.in_row == 1 else self.first
        if self.in_row >= self.limit:
            streak = f"at step {step}" if self.in_row == 1 else f"at steps {self.first}-{step} ({self.in_row} in a row)"
            raise TrainingDiverged(
                f"loss became nan or inf {streak}: stopped. Last good checkpoint (before the first bad step): "
                f"{self.last_good() or 'none yet'}. Try a lower --learning_rate, --max_grad_norm 1, or "
                "--mixed_precision no.")

    def last_good(self) -> Path | None:
        """The newest checkpoint written before the current streak began (a GAN's other phase went on training
        during it, so later ones are not clean)."""
        found = [p for p in list_checkpoints(self.checkpoints) if checkpoint_step(p) < self.first]
        return found[-1] if found else None
