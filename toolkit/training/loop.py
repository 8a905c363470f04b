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
import signal
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
from toolkit.training.checkpoints import keep_only, save_checkpoint
from toolkit.training.config import TrainingConfig
from toolkit.training.distributed import any_process
from toolkit.training.evaluation import InLoopKID
from toolkit.training.interrupts import StopRequest, one_run_per_folder
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
)
from toolkit.training.steps import NonFiniteSteps, TrainingDiverged, optimizer_step, step_logs

__all__ = ["Phase", "StepBatch", "Trainer", "TrainingDiverged", "build", "optimizer_step", "run", "train"]


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
    ema_params: list[torch.nn.Parameter] | None = None  # what the EMA averages when not all of `params`
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


@dataclass
class _Session:
    """What one training session carries besides the trainer: its summary, in-loop KID, time budget, stop request
    and NaN/inf count."""

    trainer: Trainer
    summary: RunSummary
    evaluator: InLoopKID | None
    budget: TimeBudget | None
    stop: StopRequest
    nonfinite: NonFiniteSteps

    def state(self) -> dict:
        """What a checkpoint keeps besides the weights: loss history, training time, skipped steps, evaluations,
        the time budget's plan, the trainer's own."""
        s = self.summary
        return {"loss": s.smoothed_loss, "loss_history": s.loss_history,
                "train_seconds": s.prior_train_seconds + s.train_seconds, "skipped_steps": self.nonfinite.skipped,
                **(self.evaluator.state() if self.evaluator else {}), **(self.budget.state() if self.budget else {}),
                **self.trainer.state()}


def _evaluate(run: _Session, step: int) -> None:
    """KID on the main process, shared with the others (so their checkpoints agree); log it; keep the best."""
    trainer, evaluator, summary = run.trainer, run.evaluator, run.summary
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
        best = save_checkpoint(acc, evaluator.best_root, step, run.state(), total_limit=None)
        if acc.is_main_process:
            keep_only(evaluator.best_root, best.name)


def _progress(trainer: Trainer, summary: RunSummary, kind: str, step: int, **values: float) -> None:
    """A line of progress.jsonl (main process): the step, the run's length, its training time and loss."""
    if trainer.accelerator.is_main_process:
        append_progress(trainer.out, {"kind": kind, "step": step, "total_steps": trainer.total_steps,
                                      "train_seconds": round(summary.prior_train_seconds + summary.train_seconds, 2),
                                      "loss": summary.smoothed_loss, **values})


def _after_step(run: _Session, step: int, *, last: bool, evaluate: bool = True) -> None:
    """Evaluate, checkpoint and validate when due; `last`: the run ends at this step; `evaluate=False`: it stops
    on a signal, so only an evaluation that was due anyway (its history stays an uninterrupted run's) and the
    checkpoint are made."""
    trainer = run.trainer
    cfg, acc = trainer.cfg, trainer.accelerator
    if run.evaluator is not None and (run.evaluator.due(step) or (last and evaluate)):
        _evaluate(run, step)
    if step % cfg.checkpointing_steps == 0 or last:
        save_checkpoint(acc, trainer.out / "checkpoints", step, run.state(), total_limit=cfg.checkpoints_total_limit)
        _progress(trainer, run.summary, "checkpoint", step)
    if step % cfg.validation_steps == 0 and not last and acc.is_main_process:
        _validate(trainer, step)


def _validate(trainer: Trainer, step: int, name: str | None = None) -> str:
    """Validate, but let a validation that runs out of memory cost only its grid, never the run; returns the
    grid's path ('' when skipped)."""
    try:
        return str(trainer.validate(step, name))
    except (torch.cuda.OutOfMemoryError, MemoryError):
        pass
    if torch.cuda.is_available():  # after the except block, which held the failed frames' tensors
        torch.cuda.empty_cache()
    print(f"warning: validation at step {step} ran out of memory and was skipped; training goes on (lower "
          "--num_validation_images)")
    return ""


def _budget_check(run: _Session, step: int, seconds: float) -> tuple[bool, bool]:
    """Record the step's time against the budget, planning the run when due; (stop now, the plan changed)."""
    trainer, budget = run.trainer, run.budget
    if budget is None:
        return False, False
    budget.record(seconds)
    planned = plan_if_due(trainer, budget, step, run.summary.steps_done)
    stop = step < trainer.total_steps and out_of_time(
        trainer, budget, step, evals_done=len(run.evaluator.history) if run.evaluator else 0)
    run.summary.stopped_by_budget = stop
    return stop, planned


def _loop(run: _Session, step: int) -> None:
    """Train from `step` to the end, the time budget or a stop signal: step, log, plan, evaluate, checkpoint and
    validate. A fresh run makes at least one step whatever its budget, so that it leaves a checkpoint."""
    trainer, summary = run.trainer, run.summary
    acc = trainer.accelerator
    if trainer.phases[0].every != 1:
        raise ValueError(f"{type(trainer).__name__}: the first phase's loss is the run's loss, so it runs every step")
    if run.budget is not None and step and out_of_time(trainer, run.budget, step):  # resumed with its budget spent
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
        run.nonfinite.record(step, results)  # a skipped step counts; too many in a row stop the run
        summary.add_step(results[trainer.phases[0].name][0], seconds, batch.examples)
        acc.log(step_logs(trainer, results) | {"img_per_s": summary.last_rate, **batch.logs}, step=step)
        bar.update(1)
        bar.set_postfix(loss=f"{summary.smoothed_loss:.4f}", img_s=rate(summary.last_rate))
        stop, replanned = _budget_check(run, step, seconds)
        if replanned:
            batches, bar.total, summary.total_steps = trainer.batches(step), trainer.total_steps, trainer.total_steps
        signalled = any_process(acc, run.stop.signum is not None)  # every process stops at the same step
        _after_step(run, step, last=stop or signalled or step == trainer.total_steps, evaluate=not signalled)
        if signalled:
            summary.interrupted_by = run.stop.name or "a signal to another process"
        if stop or signalled:
            break
    bar.close()


def _start(trainer: Trainer, precision_reason: str) -> tuple[int, dict, RunSummary]:
    """Resume or start: (first step, checkpoint state, the session's summary); the config is written after the
    resume check, so a refused run leaves the folder as it was."""
    cfg, acc, out = trainer.cfg, trainer.accelerator, trainer.out
    step, resumed_from, state = maybe_resume(acc, out, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)
    save_yaml(cfg, out / "config.yaml")
    if acc.is_main_process:  # an earlier run's progress is not this one's; a resumed run's ends at its checkpoint
        restart_progress(out, step, state)
    init_trackers(acc, trainer.name, cfg)
    trainer.load_state(state)
    summary = trainer.summary_class(
        output_dir=str(out), total_steps=trainer.total_steps, start_step=step, data=trainer.data_name,
        resumed_from=resumed_from, loss_history=list(state.get("loss_history", [])),
        prior_train_seconds=float(state.get("train_seconds", 0.0)),
        mixed_precision=f"{acc.mixed_precision} ({precision_reason})")
    return step, state, summary


def train(trainer: Trainer, precision_reason: str = "") -> RunSummary:
    """Run `trainer` from a fresh start or its latest checkpoint to the end (or to a stop signal, after which only
    the checkpoint is written), save its outputs and the report."""
    cfg, acc, out = trainer.cfg, trainer.accelerator, trainer.out
    try:
        step, state, summary = _start(trainer, precision_reason)
        evaluator = InLoopKID(trainer) if cfg.evaluates else None
        if evaluator is not None:
            evaluator.restore(state)
        budget = TimeBudget.from_state(cfg.max_train_time, state) \
            if cfg.max_train_time or state.get("planned_steps") else None
        if state.get("planned_steps") and trainer.plannable():  # a resumed run keeps its plan (and LR schedule)
            apply_plan(trainer, state["planned_steps"], step)
            summary.total_steps = trainer.total_steps
        nonfinite = NonFiniteSteps(cfg.max_nan_steps, out / "checkpoints", skipped=int(state.get("skipped_steps", 0)))
        with StopRequest() as stop:
            _loop(_Session(trainer, summary, evaluator, budget, stop, nonfinite), step)
        summary.skipped_steps = nonfinite.skipped
        if budget is not None:
            summary.time_budget = budget.summary(cfg.max_train_time)
        if evaluator is not None:
            summary.eval_history, summary.best_eval = evaluator.history, evaluator.best
        if acc.is_main_process and not summary.interrupted_by:  # one writer, once the last checkpoint is saved
            summary.samples = _validate(trainer, trainer.total_steps, name="final")
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
    """What a training entry point does: hold the output folder, build, train, print the summary, and publish (or
    stage) if asked; a run stopped by a signal says how to resume and exits with 128 + its number."""
    with one_run_per_folder(cfg.output_dir):  # held until the upload is done too
        trainer, reason = build(trainer_cls, cfg)
        summary = train(trainer, reason)
        main_process = trainer.accelerator.is_main_process
        if summary.interrupted_by:
            step = summary.start_step + summary.steps_done
            if main_process:
                print(f"\nstopped by {summary.interrupted_by} at step {step} of {summary.total_steps}:\n"
                      f"{summary.table()}\ncheckpoint {Path(cfg.output_dir) / 'checkpoints' / f'checkpoint-{step}'} "
                      "is written; to continue, run the same command with --resume_from_checkpoint latest")
            return 128 + signal.Signals.__members__.get(summary.interrupted_by, signal.SIGTERM)
        if main_process:
            print("\nrun finished:\n" + summary.table())
            if cfg.push_to_hub or cfg.hub_dry_run:
                card = build_model_card(trainer.model_card(summary))
                print(publish(card, cfg.output_dir, trainer.upload_files, repo_id=cfg.hub_model_id,
                              private=cfg.hub_private_repo, dry_run=cfg.hub_dry_run))
    return 0
