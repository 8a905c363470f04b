"""--max_train_time: the plan from the measured step time, the clean stop, and exact resume under a plan."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from conftest import tiny_argv
from test_train_unet import UNET_FILE, assert_same_weights

from toolkit.config import ConfigError, from_dict
from toolkit.ddpm.config import TrainUNetConfig
from toolkit.ddpm.trainer import DDPMTrainer
from toolkit.train_unet import main
from toolkit.training import budget as budget_module
from toolkit.training import loop, planning
from toolkit.training.budget import (
    PLAN_AFTER,
    REPLAN_AFTER,
    Overheads,
    TimeBudget,
    backward_seconds,
    estimate_overheads,
    plan_steps,
)
from toolkit.training.checkpoints import list_checkpoints


def test_plan_counts_validations_evaluations_and_the_end():
    plain = plan_steps(10, seconds_left=100.0, step_seconds=1.0, overheads=Overheads(0.0, 0.0, 0.0),
                       validation_steps=50, eval_steps=None)
    assert plain == 110
    costly = plan_steps(10, seconds_left=100.0, step_seconds=1.0, overheads=Overheads(10.0, 40.0, 20.0),
                        validation_steps=10, eval_steps=20)
    assert costly == 10 + math.floor(80 / (1 + 1 + 2))  # 20 s kept for the end; each step carries its share
    assert plan_steps(10, seconds_left=1.0, step_seconds=5.0, overheads=Overheads(0, 0, 9), validation_steps=1,
                      eval_steps=None) == 11  # never less than one more step


def test_overheads_grow_with_solver_steps_and_evaluation():
    cfg = from_dict(TrainUNetConfig, {"num_validation_images": 16, "train_batch_size": 16})
    few, many = (estimate_overheads(cfg, 1.0, solver_steps=n) for n in (10, 40))
    assert many.validation == pytest.approx(4 * few.validation) and few.evaluation == 0.0
    with_eval = estimate_overheads(from_dict(TrainUNetConfig, {"eval_steps": 100}), 1.0, solver_steps=10)
    assert with_eval.evaluation > 0 and with_eval.final > with_eval.validation + with_eval.evaluation


def test_budget_must_be_positive():
    with pytest.raises(ConfigError, match="max_train_time"):
        from_dict(TrainUNetConfig, {"max_train_time": 0})


def last_lr(checkpoint):
    return torch.load(checkpoint / "scheduler.bin", weights_only=True)["_last_lr"][0]


def test_the_plan_sets_the_lr_schedule_and_a_resumed_run_follows_it(tmp_path, monkeypatch):
    planned = PLAN_AFTER + 4
    monkeypatch.setattr(planning, "plan_steps", lambda step, **_: planned)  # the timing-dependent estimate, fixed
    common = dict(max_train_steps=None, max_train_time=10, lr_scheduler="cosine", lr_warmup_steps=0,
                  learning_rate=1e-3, checkpointing_steps=PLAN_AFTER + 2)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(tiny_argv(straight, **common)) == 0
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["total_steps"] == planned and summary["steps_done"] == planned
    assert summary["time_budget"]["planned_steps"] == planned and not summary["stopped_by_budget"]
    ckpt = straight / "checkpoints" / f"checkpoint-{PLAN_AFTER + 2}"
    assert json.loads((ckpt / "trainer_state.json").read_text())["planned_steps"] == planned
    # the cosine schedule was rebuilt for the planned length: 2 steps before its end, and 0 at its end
    assert last_lr(ckpt) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * (planned - 2) / planned)))
    assert last_lr(straight / "checkpoints" / f"checkpoint-{planned}") == pytest.approx(0.0, abs=1e-12)

    shutil.copytree(straight, resumed)  # as if killed after the checkpoint at PLAN_AFTER + 2
    shutil.rmtree(resumed / "checkpoints" / f"checkpoint-{planned}")
    (resumed / UNET_FILE).unlink()
    monkeypatch.setattr(planning, "plan_steps", lambda step, **_: pytest.fail("a resumed run must keep its plan"))
    assert main(tiny_argv(resumed, resume_from_checkpoint="latest", **common)) == 0
    assert_same_weights(straight, resumed)
    assert_same_weights(straight / f"checkpoints/checkpoint-{planned}", resumed / f"checkpoints/checkpoint-{planned}")


@pytest.mark.parametrize("later_seconds", [0.5, 0.92, 0.95])
def test_the_plan_is_made_again_when_the_first_steps_misled_it(tmp_path, monkeypatch, capsys, later_seconds):
    check = PLAN_AFTER + REPLAN_AFTER
    calls = []

    def plan(step, *, step_seconds, **_):
        calls.append((step, round(step_seconds, 3)))
        return check + (5 if len(calls) == 1 else 8)

    def record(self, seconds):  # a slow start-up (1 s per step) then `later_seconds`
        self._times.append(1.0 if len(self._times) < PLAN_AFTER else later_seconds)

    monkeypatch.setattr(planning, "plan_steps", plan)
    monkeypatch.setattr(TimeBudget, "record", record)
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=None, max_train_time=10, checkpointing_steps=1000)) == 0
    summary = json.loads((out / "summary.json").read_text())
    if later_seconds < 0.93:  # off the plan by more than the tolerance (7 %): planned again from the steps since
        assert calls == [(PLAN_AFTER, 1.0), (check, later_seconds)]
        assert summary["total_steps"] == summary["steps_done"] == check + 8
        assert f"planned again at step {check}" in capsys.readouterr().out
    else:  # within the tolerance: the first plan stands
        assert calls == [(PLAN_AFTER, 1.0)] and summary["total_steps"] == check + 5


def test_a_slow_start_that_outlasts_the_first_check_is_caught_by_a_later_one(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_module, "REPLAN_AFTER", 5)  # checks at steps 15, 20, 25, ... (the first half)
    calls = []

    def plan(step, *, step_seconds, **_):
        calls.append((step, round(step_seconds, 3)))
        return 40 if len(calls) == 1 else 44

    def record(self, seconds):  # 1 s per step through step 15, 0.5 s through 20, then 0.25 s: the first check (15)
        n = len(self._times)      # sees no change, the one at 20 does; the one at 25 would, but is past the half
        self._times.append(1.0 if n < 15 else 0.5 if n < 20 else 0.25)

    monkeypatch.setattr(planning, "plan_steps", plan)
    monkeypatch.setattr(TimeBudget, "record", record)
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=None, max_train_time=10, checkpointing_steps=1000)) == 0
    assert calls == [(PLAN_AFTER, 1.0), (20, 0.5)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_steps"] == summary["steps_done"] == 44
    assert summary["time_budget"]["replanned_at"] == 20


def test_a_planned_run_resumed_without_a_budget_keeps_its_plan_and_never_checks_it(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_module, "REPLAN_AFTER", 2)  # checks at 12, 14, ..., 20: the first half of 40 steps
    monkeypatch.setattr(planning, "plan_steps", lambda step, **_: 40)
    monkeypatch.setattr(loop, "out_of_time", lambda trainer, budget, step, **_: step >= 11)  # a budget spent at 11
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=None, max_train_time=10, checkpointing_steps=1000)) == 0
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["stopped_by_budget"] and stopped["total_steps"] == 40
    monkeypatch.setattr(loop, "out_of_time", planning.out_of_time)
    monkeypatch.setattr(planning, "plan_steps", lambda step, **_: pytest.fail("no budget: nothing to plan"))
    monkeypatch.setattr(TimeBudget, "record", lambda self, seconds: self._times.append(100.0))  # far off the plan
    assert main(tiny_argv(out, max_train_steps=None, resume_from_checkpoint="latest", checkpointing_steps=1000)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["start_step"] == stopped["steps_done"] < 20 and summary["total_steps"] == 40
    assert summary["start_step"] + summary["steps_done"] == 40 and not summary["stopped_by_budget"]


def test_a_spent_budget_stops_cleanly_and_a_resume_stops_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=None, max_train_time=0.0001)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_budget"] and summary["steps_done"] == 1  # a fresh run makes at least one step
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-1"]
    assert (out / UNET_FILE).is_file() and (out / "samples/final.png").is_file()
    assert "stopped by the budget" in capsys.readouterr().out
    assert main(tiny_argv(out, max_train_steps=None, max_train_time=0.0001, resume_from_checkpoint="latest")) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["steps_done"] == 0 and again["start_step"] == 1 and again["stopped_by_budget"]
    saved = json.loads((out / "checkpoints/checkpoint-1/trainer_state.json").read_text())["wall_seconds"]
    assert saved > 0 and again["time_budget"]["wall_seconds"] >= round(saved, 1)  # the clock goes on from there
    # resumed without the flag, a run that never made its plan goes on as an ordinary run
    assert main(tiny_argv(out, max_train_steps=3, resume_from_checkpoint="latest")) == 0
    last = json.loads((out / "summary.json").read_text())
    assert last["steps_done"] == 2 and last["time_budget"] is None and not last["stopped_by_budget"]


def test_a_budget_shares_its_steps_among_progressive_stages(tmp_path, monkeypatch):
    recipe = tmp_path / "stages.yaml"
    recipe.write_text("dropout: 0.1\nstages:\n  - {resolution: 8, steps: 300, train_batch_size: 4}\n"
                      "  - {resolution: 16, steps: 100, train_batch_size: 2}\n")
    seen = {}

    def fixed_plan(step, *, step_seconds, **_):
        seen["step_seconds"] = step_seconds
        return 2 * PLAN_AFTER

    shared = DDPMTrainer.set_total_steps

    def spy(self, total):
        shared(self, total)
        seen["stages"] = [(stage.resolution, stage.steps) for stage in self.stages]

    monkeypatch.setattr(planning, "plan_steps", fixed_plan)
    monkeypatch.setattr(loop.TimeBudget, "step_seconds", property(lambda self: 1.0))
    monkeypatch.setattr(DDPMTrainer, "set_total_steps", spy)
    timed = DDPMTrainer.stage_step_seconds

    def fixed_costs(self):
        unet = self.accelerator.unwrap_model(self.unet)
        before = (torch.get_rng_state(), {k: v.clone() for k, v in unet.state_dict().items()})
        seen["timed"] = timed(self)  # the real timing runs (dropout on); the plan gets fixed costs
        seen["untouched"] = (torch.equal(before[0], torch.get_rng_state())
                             and all(torch.equal(v, unet.state_dict()[k]) for k, v in before[1].items())
                             and all(p.grad is None for p in unet.parameters()))
        return [0.1, 0.2]  # a stage-2 step costs 2

    monkeypatch.setattr(DDPMTrainer, "stage_step_seconds", fixed_costs)
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=None, max_train_time=10, config=str(recipe))) == 0
    # the mean step costs 3/4 x 1 + 1/4 x 2 = 1.25 steps of the first stage
    assert seen["step_seconds"] == pytest.approx(1.25)
    assert seen["stages"] == [(8, 15), (16, 5)]  # the recipe's 3 : 1 shares of the planned 20 steps
    assert len(seen["timed"]) == 2 and all(0 < t < 10 for t in seen["timed"])
    assert seen["untouched"]  # no weight, gradient or random draw of the run changed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_steps"] == summary["steps_done"] == 2 * PLAN_AFTER


def test_backward_timing_leaves_gradients_alone_and_grows_with_the_input():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Tanh(), torch.nn.Linear(256, 256))
    params = list(net.parameters())
    small = backward_seconds(lambda: net(torch.randn(8, 256)), params)
    large = backward_seconds(lambda: net(torch.randn(4096, 256)), params, repeats=3)
    assert 0 < small < large
    assert all(p.grad is None for p in params)  # the timing trained nothing


def test_stage_shares_need_a_first_stage_longer_than_the_planning_steps():
    stages = [{"resolution": 8, "steps": PLAN_AFTER}, {"resolution": 16, "steps": 100}]
    with pytest.raises(ConfigError, match="first stage must have more than"):
        from_dict(TrainUNetConfig, {"max_train_time": 5, "stages": stages})
