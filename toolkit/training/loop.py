"""One training loop for every trainer, after EDM's: the trainer supplies models, a loss, a validation and a save;
the loop owns everything else.

A `Trainer` builds its models and optimisers as `Phase`s (one per optimiser: one for a diffusion model, two for a
GAN), yields the data of each optimiser step (`StepBatch`), computes the loss of a micro-batch, validates, and saves
its weights (checkpoints) and outputs (the end of the run). The loop does gradient accumulation, the NaN/inf
policy, clipping, the LR schedule and EMA, per-step seeding for exact resume, the progress bar, scalar logging, the
checkpoint and validation schedule with atomic checkpoints, and the run report.
"""

from __future__ import annotations

import abc
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from toolkit.config import save_yaml
from toolkit.errors import UserError
from toolkit.hub import CardInfo, build_model_card, publish
from toolkit.training.budget import TimeBudget
from toolkit.training.checkpoints import keep_only, resolve_resume, save_checkpoint
from toolkit.training.config import TrainingConfig
from toolkit.training.evaluation import InLoopKID
from toolkit.training.planning import apply_plan, out_of_time, plan_if_due
from toolkit.training.report import (
    RunSummary,
    append_progress,
    init_trackers,
    rate,
    restart_progress,
    write_summary,
)
from toolkit.training.runs import (
    make_accelerator,
    maybe_resume,
    register_checkpoint_hooks,
    step_generator,
)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class Phase:
    """One optimiser and what it trains: the loop accumulates the trainer's loss for it, clips, steps, and steps
    the EMA. `modules` are the prepared modules whose gradients are all-reduced (skipped while accumulating).

    Phases run in order within a step, each on the same micro-batches and generator; a phase with `every` = k runs
    on every k-th step only (a GAN's generator under n_critic = k). The first phase runs every step: its loss is
    the run's loss (summary, plot, progress bar)."""

    name: str
    modules: list[torch.nn.Module]
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    ema: Any = None  # a diffusers EMAModel of `params`; the trainer keeps it in its checkpoint weights
    every: int = 1  # its LR schedule then counts ceil(total_steps / every) steps
    max_grad_norm: float | None = None  # None: --max_grad_norm

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"phase {self.name}: every must be >= 1, got {self.every}")


@dataclass
class StepBatch:
    """The data of one optimiser step: one item per accumulation round, the examples it holds over all processes,
    and scalars to log with the step (e.g. the resolution of a progressive run)."""

    micro_batches: list[Any]
    examples: int
    logs: dict[str, float] = field(default_factory=dict)


class Trainer(abc.ABC):
    """What a trainer supplies to the loop. Subclasses build everything in __init__ and set `phases`,
    `total_steps` and `data_name`."""

    name: ClassVar[str]  # the tracker project, e.g. "train_unet"
    summary_class: ClassVar[type[RunSummary]] = RunSummary
    upload_files: ClassVar[list[str]]  # what a Hub push publishes from the run folder

    def __init__(self, cfg: TrainingConfig, accelerator: Accelerator) -> None:
        self.cfg, self.accelerator, self.out = cfg, accelerator, Path(cfg.output_dir)
        self.phases: list[Phase] = []
        self.total_steps = 0
        self.data_name = ""
        self.solver_steps = 1  # network evaluations per validation image (a diffusion trainer's solver steps)
        register_checkpoint_hooks(accelerator, self.save_weights, self.load_weights)  # called at save/load time

    @abc.abstractmethod
    def batches(self, start_step: int) -> Iterator[StepBatch]:
        """The data of every optimiser step from `start_step` on (a pure function of the seed and the step)."""

    @abc.abstractmethod
    def loss(self, phase: Phase, micro_batch: Any, generator: torch.Generator) -> torch.Tensor:
        """The scalar loss of one micro-batch for `phase`. Every process must return one on every call (a process
        that skipped its backward pass would leave the others waiting in the gradient all-reduce)."""

    @abc.abstractmethod
    def validate(self, step: int, name: str | None = None) -> Path:
        """Make, save (at `self.samples_path(step, name)`) and log validation images; returns the grid's path.
        Runs on the main process only, so it must use unwrapped modules, never a DDP-wrapped forward."""

    @abc.abstractmethod
    def save_weights(self, folder: Path) -> None:
        """Write what a checkpoint must hold of the models (safetensors), EMAs included, into `folder`."""

    @abc.abstractmethod
    def load_weights(self, folder: Path) -> None:
        """Load what `save_weights` wrote."""

    @abc.abstractmethod
    def save(self, summary: RunSummary) -> None:
        """Write the run's outputs (a pipeline, a LoRA) at the end, on the main process; may add to `summary`."""

    @abc.abstractmethod
    def model_card(self, summary: RunSummary) -> CardInfo:
        """What the model card says about this run."""

    def state(self) -> dict:
        """Extra JSON state kept in each checkpoint (e.g. the best validation score so far)."""
        return {}

    def load_state(self, state: dict) -> None:  # noqa: B027 (optional hook: most trainers keep no extra state)
        """Restore what `state` returned, from a checkpoint's trainer state."""

    def skipped_files(self) -> list[str]:
        """Files that could not be read, for the summary."""
        return []

    def eval_images(self, count: int) -> np.ndarray:
        """`count` samples (N, H, W, 3) uint8 for the in-loop KID: fixed seeds, the validation solver, unwrapped
        modules (main process only)."""
        raise UserError(f"{type(self).__name__} has no in-loop evaluation: drop --eval_steps / --num_evals")

    def reference_images(self, count: int) -> list[np.ndarray]:
        """The first `count` readable training images as the model sees them, (R, R, 3) uint8."""
        raise UserError(f"{type(self).__name__} has no in-loop evaluation: drop --eval_steps / --num_evals")

    def plannable(self) -> bool:
        """Whether --max_train_time may set the run's length (not when it is given in steps or epochs)."""
        return not (self.cfg.max_train_steps or self.cfg.num_epochs)

    def replannable(self) -> bool:
        """Whether the plan may be made again a few steps later (not when stages already fixed by it may have
        begun)."""
        return True

    def set_total_steps(self, total: int) -> None:
        """Make the run `total` steps long (the time budget's plan); the loop rebuilds the LR schedules."""
        self.total_steps = total

    def relative_step_cost(self, step: int) -> float:
        """The mean cost of a step over the run relative to the steps just timed, up to step `step` (1 when all
        steps cost the same; a progressive-resolution run differs), for the time budget's plan."""
        return 1.0

    def samples_path(self, step: int, name: str | None = None) -> Path:
        """Where a validation grid goes: samples/step_000250.png, or samples/{name}.png (e.g. final)."""
        path = self.out / "samples" / f"{name or f'step_{step:06d}'}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def optimizer_step(trainer: Trainer, step: int, batch: StepBatch) -> dict[str, tuple[float, float]]:
    """One optimiser step of every phase due at `step`, over the batch's micro-batches; returns
    {phase: (loss, grad norm)}."""
    generator = step_generator(trainer.cfg.seed, step, trainer.accelerator)
    return {phase.name: _phase_step(trainer, phase, step, batch, generator)
            for phase in trainer.phases if step % phase.every == 0}


def _phase_step(trainer: Trainer, phase: Phase, step: int, batch: StepBatch,
                generator: torch.Generator) -> tuple[float, float]:
    """Accumulate the phase's loss over the micro-batches, stop on NaN/inf, clip, step; (loss, grad norm)."""
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
    if not math.isfinite(total):
        kept = resolve_resume(trainer.out / "checkpoints", "latest")
        raise TrainingDiverged(
            f"loss became {total} at step {step + 1}: stopped without saving this step. Last good checkpoint: "
            f"{kept or 'none yet'}. Try a lower --learning_rate, --max_grad_norm 1, or --mixed_precision no.")
    max_norm = phase.max_grad_norm if phase.max_grad_norm is not None else trainer.cfg.max_grad_norm
    grad_norm = acc.clip_grad_norm_(phase.params, max_norm or float("inf"))
    phase.optimizer.step()
    phase.lr_scheduler.step()
    phase.optimizer.zero_grad(set_to_none=True)
    if phase.ema is not None:
        phase.ema.step(phase.params)
    return total, float(grad_norm)


def _step_logs(trainer: Trainer, results: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Scalars of one step: loss, lr and grad norm, prefixed by the phase name when there are several phases."""
    logs = {}
    for phase in (p for p in trainer.phases if p.name in results):
        prefix = f"{phase.name}/" if len(trainer.phases) > 1 else ""
        loss, grad_norm = results[phase.name]
        logs |= {f"{prefix}loss": loss, f"{prefix}lr": phase.lr_scheduler.get_last_lr()[0],
                 f"{prefix}grad_norm": grad_norm}
    return logs


def _state(trainer: Trainer, summary: RunSummary, evaluator: InLoopKID | None, budget: TimeBudget | None) -> dict:
    """What a checkpoint keeps besides the weights: loss history, training time, evaluations, the time budget's
    plan, the trainer's own."""
    return {"loss": summary.smoothed_loss, "loss_history": summary.loss_history,
            "train_seconds": summary.prior_train_seconds + summary.train_seconds,
            **(evaluator.state() if evaluator else {}), **(budget.state() if budget else {}), **trainer.state()}


def _evaluate(trainer: Trainer, evaluator: InLoopKID, step: int, summary: RunSummary,
              budget: TimeBudget | None) -> None:
    """KID on the main process, shared with the others (so their checkpoints agree); log it; keep the best."""
    acc = trainer.accelerator
    seconds = summary.prior_train_seconds + summary.train_seconds
    point = None
    if acc.is_main_process:
        try:
            point = evaluator.measure(step, seconds)
        except UserError as e:  # tell the other processes, which wait in the broadcast, to stop too
            point = {"error": str(e)}
    point = broadcast_object_list([point])[0]
    if "error" in point:
        raise UserError(point["error"])
    if not acc.is_main_process:
        evaluator.history.append(point)
    summary.eval_seconds += point["seconds"]
    acc.log({"eval/kid": point["kid"], "eval/kid_std": point["kid_std"], "eval/seconds": point["seconds"]},
            step=step)
    _progress(trainer, summary, "eval", step, kid=point["kid"], kid_std=point["kid_std"])
    acc.print(f"step {step}: KID x 1000 = {1000 * point['kid']:.2f} ± {1000 * point['kid_std']:.2f} "
              f"({point['seconds']:.0f} s)")
    if evaluator.improved(point) and trainer.cfg.keep_best_checkpoint:
        best = save_checkpoint(acc, evaluator.best_root, step, _state(trainer, summary, evaluator, budget), total_limit=None)
        if acc.is_main_process:
            keep_only(evaluator.best_root, best.name)


def _progress(trainer: Trainer, summary: RunSummary, kind: str, step: int, **values: float) -> None:
    """A line of progress.jsonl (main process): the step, the run's length, its training time and loss."""
    if trainer.accelerator.is_main_process:
        append_progress(trainer.out, {"kind": kind, "step": step, "total_steps": trainer.total_steps,
                                      "train_seconds": round(summary.prior_train_seconds + summary.train_seconds, 2),
                                      "loss": summary.smoothed_loss, **values})


def _after_step(trainer: Trainer, step: int, summary: RunSummary, evaluator: InLoopKID | None,
                budget: TimeBudget | None, *, last: bool) -> None:
    """Evaluate, checkpoint and validate when due; `last`: the run ends at this step."""
    cfg, acc = trainer.cfg, trainer.accelerator
    if evaluator is not None and (evaluator.due(step) or last):
        _evaluate(trainer, evaluator, step, summary, budget)
    if step % cfg.checkpointing_steps == 0 or last:
        save_checkpoint(acc, trainer.out / "checkpoints", step, _state(trainer, summary, evaluator, budget),
                        total_limit=cfg.checkpoints_total_limit)
        _progress(trainer, summary, "checkpoint", step)
    if step % cfg.validation_steps == 0 and not last and acc.is_main_process:
        trainer.validate(step)


def _loop(trainer: Trainer, step: int, summary: RunSummary, evaluator: InLoopKID | None,
          budget: TimeBudget | None) -> None:
    """Train from `step` to the end (or the time budget): step, log, plan, evaluate, checkpoint and validate. A
    fresh run makes at least one step whatever its budget, so that it leaves a checkpoint."""
    acc = trainer.accelerator
    if trainer.phases[0].every != 1:
        raise ValueError(f"{type(trainer).__name__}: the first phase's loss is the run's loss, so it runs every step")
    if budget is not None and step and out_of_time(trainer, budget, step):  # resumed with its budget spent
        summary.stopped_by_budget = True
        return
    bar = tqdm(total=trainer.total_steps, initial=step, desc="training", disable=not acc.is_local_main_process)
    batches = trainer.batches(step)
    while step < trainer.total_steps:
        tick = time.perf_counter()  # the step's time includes waiting for its data
        batch = next(batches, None)
        if batch is None:
            raise RuntimeError(f"{type(trainer).__name__}.batches() ended at step {step} of {trainer.total_steps}")
        results = optimizer_step(trainer, step, batch)
        step += 1
        seconds = time.perf_counter() - tick
        loss = results[trainer.phases[0].name][0]
        summary.add_step(loss, seconds, batch.examples)
        acc.log(_step_logs(trainer, results) | {"img_per_s": summary.last_rate, **batch.logs}, step=step)
        bar.update(1)
        bar.set_postfix(loss=f"{summary.smoothed_loss:.4f}", img_s=rate(summary.last_rate))
        stop = False
        if budget is not None:
            budget.record(seconds)
            if plan_if_due(trainer, budget, step, summary.steps_done):
                batches, bar.total, summary.total_steps = trainer.batches(step), trainer.total_steps, trainer.total_steps
            stop = step < trainer.total_steps and out_of_time(
                trainer, budget, step, evals_done=len(evaluator.history) if evaluator else 0)
            summary.stopped_by_budget = stop
        _after_step(trainer, step, summary, evaluator, budget, last=stop or step == trainer.total_steps)
        if stop:
            break
    bar.close()


def train(trainer: Trainer, precision_reason: str = "") -> RunSummary:
    """Run `trainer` from a fresh start or its latest checkpoint to the end, save its outputs and the report."""
    cfg, acc, out = trainer.cfg, trainer.accelerator, trainer.out
    try:
        step, resumed_from, state = maybe_resume(acc, out, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)
        save_yaml(cfg, out / "config.yaml")  # after the resume check: a refused run leaves the folder as it was
        if acc.is_main_process:  # an earlier run's progress is not this one's; a resumed run's ends at its checkpoint
            restart_progress(out, step, state)
        init_trackers(acc, trainer.name, cfg)
        trainer.load_state(state)
        evaluator = InLoopKID(trainer) if cfg.evaluates else None
        if evaluator is not None:
            evaluator.restore(state)
        summary = trainer.summary_class(
            output_dir=str(out), total_steps=trainer.total_steps, start_step=step, data=trainer.data_name,
            resumed_from=resumed_from, loss_history=list(state.get("loss_history", [])),
            prior_train_seconds=float(state.get("train_seconds", 0.0)),
            mixed_precision=f"{acc.mixed_precision} ({precision_reason})")
        budget = TimeBudget.from_state(cfg.max_train_time, state) \
            if cfg.max_train_time or state.get("planned_steps") else None
        if state.get("planned_steps") and trainer.plannable():  # a resumed run keeps its plan (and LR schedule)
            apply_plan(trainer, state["planned_steps"], step)
            summary.total_steps = trainer.total_steps
        _loop(trainer, step, summary, evaluator, budget)
        if budget is not None:
            summary.time_budget = budget.summary(cfg.max_train_time)
        if evaluator is not None:
            summary.eval_history, summary.best_eval = evaluator.history, evaluator.best
        if acc.is_main_process:  # one writer: the other processes are done once the last checkpoint is saved
            summary.samples = str(trainer.validate(trainer.total_steps, name="final"))
            trainer.save(summary)
    finally:
        acc.end_training()  # flush the trackers, also when the run stops on an error
    summary.skipped_files = sorted(set(trainer.skipped_files()))
    if acc.is_main_process:
        write_summary(summary, out)
    return summary


def build(trainer_cls: type[Trainer], cfg: TrainingConfig) -> tuple[Trainer, str]:
    """The output folder, an Accelerator with the resolved precision, and the trainer; returns the trainer and the
    reason for its precision."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator, reason = make_accelerator(cfg, out)
    accelerator.print(f"mixed precision: {accelerator.mixed_precision} ({reason})")
    return trainer_cls(cfg, accelerator), reason


def run(trainer_cls: type[Trainer], cfg: TrainingConfig) -> int:
    """What a training entry point does: build, train, print the summary, and publish (or stage) if asked."""
    trainer, reason = build(trainer_cls, cfg)
    summary = train(trainer, reason)
    if trainer.accelerator.is_main_process:
        print("\nrun finished:\n" + summary.table())
        if cfg.push_to_hub or cfg.hub_dry_run:
            card = build_model_card(trainer.model_card(summary))
            print(publish(card, cfg.output_dir, trainer.upload_files, repo_id=cfg.hub_model_id,
                          private=cfg.hub_private_repo, dry_run=cfg.hub_dry_run))
    return 0

