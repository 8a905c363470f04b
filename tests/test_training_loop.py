"""The shared training core with a toy trainer shaped like a GAN (two phases, an EMA, extra checkpoint state):
what a third trainer gets by supplying only its models, losses, validation and save."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from toolkit.config import ConfigError, from_dict, option, with_defaults
from toolkit.hub import CardInfo
from toolkit.training.checkpoints import list_checkpoints
from toolkit.training.config import TrainingConfig
from toolkit.training.loop import Phase, StepBatch, Trainer, TrainingDiverged, build, optimizer_step, train
from toolkit.training.runs import make_lr_scheduler, make_optimizer


@dataclass
@with_defaults(learning_rate=1e-2, train_batch_size=4, validation_steps=2, checkpointing_steps=2,
               output_dir="runs/toy")
class ToyConfig(TrainingConfig):
    """A two-network toy: a generator maps noise to points, a critic scores them."""

    width: int = option(8, "hidden width")
    n_critic: int = option(1, "critic steps per generator step")
    nan_at_call: int | None = option(None, "make the critic loss NaN at this call (tests the NaN policy)")
    nan_from_call: int | None = option(None, "make every critic loss NaN from this call on")
    signal_at_call: int | None = option(None, "send this process SIGTERM at this call (tests the stop request)")


class ToyTrainer(Trainer):
    """Two phases (critic, then generator), an EMA of the generator, a counter kept in checkpoints."""

    name = "toy_gan"
    upload_files = ["toy.safetensors"]

    def __init__(self, cfg: ToyConfig, accelerator) -> None:
        super().__init__(cfg, accelerator)
        torch.manual_seed(cfg.seed)
        self.gen = torch.nn.Sequential(torch.nn.Linear(2, cfg.width), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(cfg.width, 2))
        self.critic = torch.nn.Sequential(torch.nn.Linear(2, cfg.width), torch.nn.Tanh(), torch.nn.Linear(cfg.width, 1))
        self.total_steps, self.data_name, self.calls, self.validated = cfg.max_train_steps or 6, "toy points", 0, []
        self.ema = EMAModel(self.gen.parameters(), decay=0.9)
        self.phases = [self._phase("critic", self.critic),
                       self._phase("generator", self.gen, self.ema, every=cfg.n_critic)]

    def _phase(self, name, module, ema=None, every=1) -> Phase:
        cfg, acc = self.cfg, self.accelerator
        optimizer = make_optimizer(list(module.parameters()), cfg.adamw)
        scheduler = make_lr_scheduler(cfg, optimizer, -(-self.total_steps // every), acc.num_processes)
        module, optimizer, scheduler = acc.prepare(module, optimizer, scheduler)
        return Phase(name, [module], list(module.parameters()), optimizer, scheduler, ema, every=every)

    def batches(self, start_step: int) -> Iterator[StepBatch]:
        for step in range(start_step, self.total_steps):
            real = torch.randn(self.cfg.train_batch_size, 2, generator=torch.Generator().manual_seed(step)) + 3
            yield StepBatch([real[:2], real[2:]], self.cfg.train_batch_size)

    def loss(self, phase: Phase, micro_batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.cfg.signal_at_call:
            os.kill(os.getpid(), signal.SIGTERM)
        fake = self.phases[1].modules[0](torch.randn(micro_batch.shape, generator=generator))
        if phase.name == "critic":
            loss = self.critic(fake.detach()).mean() - self.critic(micro_batch).mean()
            bad = self.calls == self.cfg.nan_at_call or self.calls >= (self.cfg.nan_from_call or 10**9)
            return loss * float("nan") if bad else loss
        return -self.critic(fake).mean()

    def validate(self, step: int, name: str | None = None) -> Path:
        self.validated.append(step)
        path = self.out / "samples" / f"{name or step}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("ok")
        return path

    def save_weights(self, folder: Path) -> None:
        state = {f"gen.{k}": v for k, v in self.gen.state_dict().items()}
        state |= {f"critic.{k}": v for k, v in self.critic.state_dict().items()}
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "toy.safetensors")
        torch.save(self.ema.state_dict(), folder / "ema.pt")  # decay state and shadow weights

    def load_weights(self, folder: Path) -> None:
        state = load_file(folder / "toy.safetensors")
        self.gen.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("gen.")})
        self.critic.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("critic.")})
        self.ema.load_state_dict(torch.load(folder / "ema.pt", weights_only=True))

    def save(self, summary) -> None:
        save_file({k: v.contiguous() for k, v in self.gen.state_dict().items()}, self.out / "toy.safetensors")

    def model_card(self, summary) -> CardInfo:
        return CardInfo(repo_id="me/toy", pipeline_tag="other", license="mit", description="toy")

    def state(self) -> dict:
        return {"calls": self.calls}

    def load_state(self, state: dict) -> None:
        self.calls = state.get("calls", 0)


def toy(out: Path, **overrides) -> ToyConfig:
    return from_dict(ToyConfig, {"output_dir": str(out), "report_to": "tensorboard", "mixed_precision": "no",
                                 "num_cpu_threads": 1, "max_train_steps": 6, **overrides})


def run_toy(cfg: ToyConfig):
    trainer, reason = build(ToyTrainer, cfg)
    return trainer, train(trainer, reason)


def test_both_phases_train_and_the_loop_does_the_rest(tmp_path):
    out = tmp_path / "run"
    trainer, summary = run_toy(toy(out))
    assert summary.steps_done == 6 and len(summary.loss_history) == 6 and np.isfinite(summary.smoothed_loss)
    assert trainer.validated == [2, 4, 6]  # on schedule, plus the final validation
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert (out / "toy.safetensors").is_file() and (out / "summary.json").is_file() and (out / "loss.png").is_file()
    assert (out / "logs" / "toy_gan").is_dir()  # trackers are named after the trainer that ran
    state = json.loads((out / "checkpoints/checkpoint-6/trainer_state.json").read_text())
    assert state["calls"] == trainer.calls == 6 * 2 * 2  # 2 phases x 2 micro-batches per step
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    cfg = toy(tmp_path / "steps", max_train_steps=1)
    trainer, _ = build(ToyTrainer, cfg)
    before = {p.name: [t.detach().clone() for t in p.params] for p in trainer.phases}
    results = optimizer_step(trainer, 0, next(trainer.batches(0)))
    assert set(results) == {"critic", "generator"} and all(np.isfinite(v[0]) for v in results.values())
    for phase in trainer.phases:
        assert any(not torch.equal(a, b) for a, b in zip(before[phase.name], phase.params, strict=True)), phase.name


def test_resume_continues_exactly(tmp_path):
    from accelerate.state import AcceleratorState

    straight, _ = run_toy(toy(tmp_path / "straight"))
    AcceleratorState._reset_state(reset_partial_state=True)
    run_toy(toy(tmp_path / "resumed"))
    shutil.rmtree(tmp_path / "resumed/checkpoints/checkpoint-6")
    shutil.rmtree(tmp_path / "resumed/checkpoints/checkpoint-4")
    AcceleratorState._reset_state(reset_partial_state=True)
    resumed, summary = run_toy(toy(tmp_path / "resumed", resume_from_checkpoint="latest"))
    assert summary.start_step == 2 and resumed.calls == straight.calls
    a, b = load_file(tmp_path / "straight/toy.safetensors"), load_file(tmp_path / "resumed/toy.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # dropout, noise and data drawn exactly as without the stop
    for x, y in zip(straight.ema.shadow_params, resumed.ema.shadow_params, strict=True):
        assert torch.equal(x, y)


def test_a_nan_loss_stops_the_run_naming_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss became nan or inf at step 3:.*checkpoint-2"):
        run_toy(toy(out, nan_at_call=9, max_nan_steps=1))  # step 3's first critic micro-batch
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2"]


def test_nan_steps_in_a_row_stop_the_run_at_the_limit(tmp_path):
    out = tmp_path / "run"
    expected = r"at steps 3-5 \(3 in a row\).*before the first bad step\): \S*checkpoint-2\."
    with pytest.raises(TrainingDiverged, match=expected):
        run_toy(toy(out, nan_from_call=9, max_nan_steps=3))  # steps 3, 4 and 5; the generator trained on in 3 and 4
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]


def test_a_lone_nan_step_is_skipped_counted_and_changes_nothing(tmp_path):
    trainer, summary = run_toy(toy(tmp_path / "run", nan_at_call=9))
    assert summary.steps_done == 6 and summary.skipped_steps == 1 and np.isfinite(summary.smoothed_loss)
    assert np.isnan(summary.loss_history[2]) and "1 with a NaN/inf loss" in summary.table()
    state = json.loads((tmp_path / "run/checkpoints/checkpoint-6/trainer_state.json").read_text())
    assert state["skipped_steps"] == 1
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    trainer, _ = build(ToyTrainer, toy(tmp_path / "steps", nan_from_call=1))
    before = [t.detach().clone() for t in trainer.phases[0].params]
    results = optimizer_step(trainer, 0, next(trainer.batches(0)))
    assert all(np.isnan(v).all() for v in results["critic"])
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.phases[0].params, strict=True))
    assert trainer.phases[0].lr_scheduler.scheduler.last_epoch == 1  # the schedule stays on the step count


def test_with_defaults_keeps_one_declaration():
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(ToyConfig)}
    base = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    assert ToyConfig().learning_rate == 1e-2 and TrainingConfig().learning_rate == 1e-4
    assert fields["learning_rate"].metadata == base["learning_rate"].metadata  # the same help, declared once
    assert list(fields)[: len(base)] == list(base)  # inherited options keep their place
    with pytest.raises(TypeError, match="which no base config declares"):
        with_defaults(no_such_option=1)(type("Bad", (TrainingConfig,), {}))
    with pytest.raises(ConfigError, match="lr_scheduler"):
        with_defaults(lr_scheduler="sometimes")(type("Bad", (TrainingConfig,), {}))


def test_a_phase_can_run_every_k_steps(tmp_path):
    trainer, _ = build(ToyTrainer, toy(tmp_path / "run", n_critic=2))
    batches = trainer.batches(0)
    for step in range(2):
        gen_before = [t.detach().clone() for t in trainer.phases[1].params]
        results = optimizer_step(trainer, step, next(batches))
        unchanged = all(torch.equal(a, b) for a, b in zip(gen_before, trainer.phases[1].params, strict=True))
        assert set(results) == ({"critic", "generator"} if step == 0 else {"critic"})
        assert unchanged == (step == 1)  # the generator trains on even steps only (n_critic = 2)
    with pytest.raises(ValueError, match="every must be >= 1"):
        Phase("g", [], [], None, None, every=0)
    trainer.phases.reverse()  # a first phase that skips steps would leave steps without a loss
    with pytest.raises(ValueError, match="first phase"):
        train(trainer)
