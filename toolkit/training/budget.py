"""--max_train_time: a wall-time budget that plans the run's length and stops it cleanly.

The run first trains `PLAN_AFTER` steps on a provisional schedule (linear warm-up does not depend on the run's
length, so with at least that many warm-up steps nothing differs). It then measures its step time, estimates what
validations, evaluations and the final grid will cost, and fixes the number of steps that fit: the LR schedule is
rebuilt for that length and the plan is kept in every checkpoint, so a resumed run follows the same schedule step
for step. The first steps of a process can run at half speed (allocator, caches, a busy machine settling), and
the speed-up can take a few hundred steps (or the machine's speed drifts), so the plan is checked every
REPLAN_AFTER steps, always once and then through the run's first half: if the recent step time differs from the
plan's by more than REPLAN_TOLERANCE, the run is planned again (a cosine LR then moves by a few percent of its peak;
inside a DDPM's default warm-up not at all). With one check only, runs that sped up after it ended with 10-23 % of
their budget unused.
Whatever the plan, the run stops when the next step and the final outputs would pass the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolkit.training.config import TrainingConfig

if TYPE_CHECKING:  # torch is imported when timing, so that parsing a config stays light
    import torch

PLAN_AFTER = 10  # steps timed before the plan (the first is left out: kernel selection, caches)
REPLAN_AFTER = 50  # steps between checks of the plan; the step time is the mean of this many recent steps
REPLAN_UNTIL = 0.5  # checks after the first only in this first fraction of the run (a cosine LR moves by <= 0.1)
REPLAN_TOLERANCE = 0.07  # planned again when the step time is off the plan's by more than this fraction
SAVE_SECONDS = 5.0  # the final checkpoint and outputs, beyond the final grid
INCEPTION_IMAGES_PER_SECOND = 15.0  # the in-loop KID's feature extraction on a 2-core CPU (docs/metrics.md)


def sampling_seconds(step_seconds: float, *, images: int, solver_steps: int, batch: int) -> float:
    """Estimated seconds to sample `images` with `solver_steps` network evaluations each: a forward pass costs about
    a third of a training step (forward, backward, update) of `batch` examples."""
    return step_seconds * images * solver_steps / (3 * batch)


def backward_seconds(forward: Callable[[], torch.Tensor], params: list[torch.nn.Parameter], *,
                     repeats: int = 2) -> float:
    """The best of `repeats` timings of `forward()` and its gradient with respect to `params`. The run's state is
    untouched: the gradient is returned by autograd, not accumulated into `.grad`, and the random streams (dropout)
    are restored afterwards."""
    import torch

    device = params[0].device if params else torch.device("cpu")

    def wait() -> None:  # queued device work must not count, before or after
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    best = math.inf
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for _ in range(repeats):  # the first call at a new shape also pays for kernel selection and allocation
            wait()
            begin = time.perf_counter()
            torch.autograd.grad(forward().float().square().mean(), params, allow_unused=True)
            wait()
            best = min(best, time.perf_counter() - begin)
    return best


@dataclass
class Overheads:
    """Estimated seconds of what the loop does besides steps: per validation, per evaluation, and at the end."""

    validation: float
    evaluation: float
    final: float


def estimate_overheads(cfg: TrainingConfig, step_seconds: float, *, solver_steps: int) -> Overheads:
    """What a validation grid, an in-loop evaluation and the end of the run will cost, from the step time."""
    batch = cfg.train_batch_size * cfg.gradient_accumulation_steps
    validation = sampling_seconds(step_seconds, images=cfg.num_validation_images, solver_steps=solver_steps,
                                  batch=batch)
    evaluation = 0.0
    if cfg.evaluates:
        evaluation = (sampling_seconds(step_seconds, images=cfg.num_eval_images, solver_steps=solver_steps,
                                       batch=batch) + cfg.num_eval_images / INCEPTION_IMAGES_PER_SECOND)
    return Overheads(validation, evaluation, validation + evaluation + SAVE_SECONDS)


def plan_steps(step: int, *, seconds_left: float, step_seconds: float, overheads: Overheads,
               validation_steps: int, eval_steps: int | None, num_evals: int | None = None) -> int:
    """The total step count that fits `seconds_left` after `step`, with validations and evaluations on schedule
    (every `eval_steps`, or `num_evals` in all, the last one at the end) and the final outputs; at least step + 1."""
    per_step = step_seconds + overheads.validation / validation_steps
    fixed = overheads.final
    if eval_steps:
        per_step += overheads.evaluation / eval_steps
    elif num_evals:
        fixed += (num_evals - 1) * overheads.evaluation  # the last one is part of `final`
    return step + max(1, math.floor((seconds_left - fixed) / per_step))


@dataclass
class TimeBudget:
    """The budget of one run: seconds spent (earlier sessions included), the measured step time, and the plan."""

    seconds: float
    spent_before: float = 0.0  # wall seconds of the sessions before a resume
    planned_steps: int | None = None  # the plan, once made (or restored from a checkpoint)
    plan_step_seconds: float | None = None  # the step time the plan was made from
    replanned_at: int | None = None  # the step at which the plan was made again, if it was
    start: float = field(default_factory=time.perf_counter)
    _times: list[float] = field(default_factory=list)

    @classmethod
    def from_state(cls, minutes: float | None, state: dict) -> TimeBudget:
        """The budget of `minutes` (None: no limit, a resumed run that keeps its plan), continued from a
        checkpoint's state (empty for a fresh run)."""
        seconds = 60.0 * minutes if minutes else math.inf
        return cls(seconds, float(state.get("wall_seconds", 0.0)), state.get("planned_steps"),
                   state.get("plan_step_seconds"), state.get("replanned_at"))

    def spent(self) -> float:
        return self.spent_before + time.perf_counter() - self.start

    def record(self, seconds: float) -> None:
        """Time of one optimiser step."""
        self._times.append(seconds)

    @property
    def step_seconds(self) -> float:
        """The recent step time (the first step of a session left out once there are others); before this
        session's first step, the plan's."""
        times = self._times[1:] if len(self._times) > 1 else self._times
        recent = times[-REPLAN_AFTER:]  # at a check of the plan: the steps since the last one
        return sum(recent) / len(recent) if recent else (self.plan_step_seconds or 0.0)

    def plan_due(self, step: int, steps_this_session: int) -> bool:
        """Plan at step PLAN_AFTER (also when resumed before it, so the plan falls where it would have), or after
        PLAN_AFTER steps of a session resumed later without a plan."""
        if self.planned_steps is not None or math.isinf(self.seconds):
            return False
        resumed_at = step - steps_this_session
        return step == PLAN_AFTER if resumed_at < PLAN_AFTER else steps_this_session == PLAN_AFTER

    def check_due(self, step: int, steps_this_session: int, total_steps: int) -> bool:
        """Whether to check the plan at `step` (the same answer on every process): every REPLAN_AFTER steps counted
        from PLAN_AFTER, the first (step PLAN_AFTER + REPLAN_AFTER) always and later ones within the first
        REPLAN_UNTIL of the run; only with a budget, once this session has timed a full window (a resumed process's
        first steps must not replace its checkpoint's plan), and when the run goes on past `step`."""
        since = step - PLAN_AFTER
        if since <= 0 or since % REPLAN_AFTER or not self.plan_step_seconds or math.isinf(self.seconds):
            return False
        early = since == REPLAN_AFTER or step <= REPLAN_UNTIL * total_steps
        return early and steps_this_session > REPLAN_AFTER and total_steps > step

    def off_plan(self) -> bool:
        """Whether the recent step time differs from the plan's by more than REPLAN_TOLERANCE."""
        return abs(self.step_seconds / self.plan_step_seconds - 1) > REPLAN_TOLERANCE

    def out_of_time(self, final_seconds: float) -> bool:
        """Whether one more step and the final outputs would pass the budget."""
        return self.spent() + self.step_seconds + final_seconds > self.seconds

    def state(self) -> dict:
        return {"wall_seconds": self.spent(), "planned_steps": self.planned_steps,
                "plan_step_seconds": self.plan_step_seconds, "replanned_at": self.replanned_at}

    def summary(self, minutes: float | None) -> dict:
        """What the run report says about the budget."""
        return {"minutes": minutes, "planned_steps": self.planned_steps, "plan_step_seconds": self.plan_step_seconds,
                "replanned_at": self.replanned_at, "step_seconds": round(self.step_seconds, 4),
                "wall_seconds": round(self.spent(), 1)}
