"""The time budget's decisions inside the loop (`toolkit.training.budget` holds the arithmetic and the clock): make
the plan (and check it early in the run), apply it to the trainer's length and LR schedules, and stop in time. Timing differs
between processes, so the main process decides and the others follow."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from accelerate.utils import broadcast_object_list

from toolkit.training.budget import TimeBudget, estimate_overheads, plan_steps
from toolkit.training.runs import reschedule

if TYPE_CHECKING:
    from toolkit.training.loop import Trainer


def shared(trainer: Trainer, decision: bool) -> bool:
    """The main process's timing-based `decision`, for every process (they must take the same branch)."""
    return bool(broadcast_object_list([decision])[0]) if trainer.accelerator.num_processes > 1 else decision


def apply_plan(trainer: Trainer, total: int, step: int) -> None:
    """Make the run `total` steps long from `step` on: the trainer's length and every phase's LR schedule."""
    trainer.set_total_steps(total)
    world, total = trainer.accelerator.num_processes, trainer.total_steps  # the trainer may round `total`
    for phase in trainer.phases:
        phase.lr_scheduler = reschedule(phase.lr_scheduler, trainer.cfg, phase.optimizer,
                                        steps=math.ceil(total / phase.every), done=math.ceil(step / phase.every),
                                        world=world)


def make_plan(trainer: Trainer, budget: TimeBudget, step: int) -> None:
    """Fix the run's length from the measured step time (on the main process, shared) and apply it."""
    acc, cfg = trainer.accelerator, trainer.cfg
    again = ""
    if budget.planned_steps is not None:
        again = f" (planned again at step {step}: the plan's was {budget.plan_step_seconds:.2f})"
        budget.replanned_at = step
    planned = None
    if acc.is_main_process:
        overheads = estimate_overheads(cfg, budget.step_seconds, solver_steps=trainer.solver_steps)
        planned = plan_steps(step, seconds_left=budget.seconds - budget.spent(),
                             step_seconds=budget.step_seconds * trainer.relative_step_cost(step),
                             overheads=overheads, validation_steps=cfg.validation_steps, eval_steps=cfg.eval_steps,
                             num_evals=cfg.num_evals)
    budget.planned_steps = broadcast_object_list([planned])[0]
    budget.plan_step_seconds = budget.step_seconds
    apply_plan(trainer, budget.planned_steps, step)
    acc.print(f"\n--max_train_time {cfg.max_train_time:g} min: {budget.step_seconds:.2f} s/step{again}, "
              f"{budget.planned_steps} steps planned")


def plan_if_due(trainer: Trainer, budget: TimeBudget, step: int, steps_this_session: int) -> bool:
    """Plan after step PLAN_AFTER, and plan again at a check (`TimeBudget.check_due`) if the step time has moved off
    the plan's; whether the run's length changed."""
    if not trainer.plannable():
        return False
    due = budget.plan_due(step, steps_this_session) or (
        budget.check_due(step, steps_this_session, trainer.total_steps) and trainer.replannable()
        and shared(trainer, budget.off_plan()))
    if due:
        make_plan(trainer, budget, step)
    return due


def out_of_time(trainer: Trainer, budget: TimeBudget, step: int, *, evals_done: int = 0) -> bool:
    """Whether the next step, what falls due with it and the final outputs would pass the budget (the main process
    decides for all)."""
    cfg = trainer.cfg
    costs = estimate_overheads(cfg, budget.step_seconds, solver_steps=trainer.solver_steps)
    due = costs.final
    if (step + 1) % cfg.validation_steps == 0:
        due += costs.validation
    if step + 1 < trainer.total_steps and cfg.eval_due(step + 1, trainer.total_steps, evals_done):
        due += costs.evaluation
    return shared(trainer, budget.out_of_time(due))
