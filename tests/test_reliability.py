"""What survives the outside world: SIGTERM/SIGINT stop a run after a checkpoint, one run per output folder, a failed
checkpoint write keeps the previous one, and SIGKILL at random moments (a checkpoint write included) never costs
exactness: the resumed run ends with the weights of an uninterrupted one, for the LoRA and GAN trainers too."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import tiny_argv
from safetensors.torch import load_file
from test_pose_lora import lora_flags
from test_train_gan import gan_argv
from test_training_loop import ToyTrainer, run_toy, toy

from toolkit.errors import UserError
from toolkit.train_unet import main as train_unet
from toolkit.training import checkpoints, loop
from toolkit.training.checkpoints import checkpoint_step, list_checkpoints
from toolkit.training.interrupts import LOCK_FILE, RunLock, StopRequest

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_resume_is_exact(tmp_path, capsys):
    straight, _ = run_toy(toy(tmp_path / "straight"))
    AcceleratorState._reset_state(reset_partial_state=True)
    out, before = tmp_path / "stopped", signal.getsignal(signal.SIGTERM)
    assert loop.run(ToyTrainer, toy(out, signal_at_call=10)) == 128 + signal.SIGTERM  # during step 3
    printed = capsys.readouterr().out
    assert "stopped by SIGTERM at step 3 of 6" in printed and "--resume_from_checkpoint latest" in printed
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2", "checkpoint-3"]
    assert not (out / "toy.safetensors").exists()  # the final outputs wait for the end of the run
    assert json.loads((out / "summary.json").read_text())["interrupted_by"] == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    AcceleratorState._reset_state(reset_partial_state=True)
    resumed, summary = run_toy(toy(out, resume_from_checkpoint="latest"))
    assert summary.start_step == 3 and resumed.calls == straight.calls
    a, b = load_file(tmp_path / "straight/toy.safetensors"), load_file(out / "toy.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_validation_out_of_memory_costs_its_grid_not_the_run(tmp_path, monkeypatch, capsys):
    real = ToyTrainer.validate

    def hungry(self, step, name=None):
        if step == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, step, name)

    monkeypatch.setattr(ToyTrainer, "validate", hungry)
    trainer, summary = run_toy(toy(tmp_path / "run"))
    assert summary.steps_done == 6 and trainer.validated == [4, 6] and (tmp_path / "run/toy.safetensors").is_file()
    assert "validation at step 2 ran out of memory and was skipped" in capsys.readouterr().out


def test_a_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first is only noted: no KeyboardInterrupt
        time.sleep(0.05)
        assert stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before


def test_one_run_per_folder(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(UserError, match=rf"in use by another run \(pid {os.getpid()} on "), RunLock(out):
            pass
        assert train_unet(tiny_argv(out)) == 2
        assert "is in use by another run" in capsys.readouterr().err
        assert not (out / "config.yaml").exists()  # refused before anything was written
    with RunLock(out):  # released on exit
        pass


def test_a_killed_runs_lock_is_not_in_the_way(tmp_path):
    out = tmp_path / "run"
    code = f"import time; from toolkit.training.interrupts import RunLock\nwith RunLock({str(out)!r}):\n" \
           "    print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid}"), RunLock(out):
        pass
    holder.kill()
    holder.wait()
    assert (out / LOCK_FILE).is_file()
    with RunLock(out):  # the kernel dropped the dead holder's lock: no stale lock to clear
        pass


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = checkpoints._fsync_tree

    def full_disk(path: Path) -> None:  # the last write of a checkpoint fails, as on a full disk
        if path.name == ".checkpoint-4.tmp":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path)

    monkeypatch.setattr(checkpoints, "_fsync_tree", full_disk)
    assert train_unet(tiny_argv(out, max_train_steps=4, checkpointing_steps=2)) == 2
    err = capsys.readouterr().err
    assert "could not write checkpoint-4" in err and "No space left on device" in err
    assert "latest complete checkpoint is still" in err and "checkpoint-2" in err
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2"]
    assert not list((out / "checkpoints").glob(".checkpoint-*"))  # the partial write is gone
    monkeypatch.undo()
    assert train_unet(tiny_argv(out, max_train_steps=4, checkpointing_steps=2, resume_from_checkpoint="latest")) == 0


def _latest(out: Path) -> int:
    found = list_checkpoints(out / "checkpoints")
    return checkpoint_step(found[-1]) if found else 0


def _kill_at_random_moments(cmd: list[str], out: Path, kills: int, seed: int) -> list[str]:
    """Run `cmd` and SIGKILL it `kills` times, restarting it with --resume_from_checkpoint latest: first in the
    middle of a checkpoint write, then at a random moment after the run's next checkpoint; returns what each kill
    interrupted."""
    rng, moments = random.Random(seed), []
    for k in range(kills):
        start = _latest(out)
        proc = subprocess.Popen(cmd + (["--resume_from_checkpoint", "latest"] if k else []), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            writing = list((out / "checkpoints").glob(".checkpoint-*.tmp"))
            if (k == 0 and writing and _latest(out) >= 1) or (k and _latest(out) > start):
                time.sleep(0.0 if k == 0 else rng.uniform(0.0, 0.5))
                proc.send_signal(signal.SIGKILL)
                moments.append("checkpoint write" if k == 0 else f"after checkpoint-{_latest(out)}")
                break
            time.sleep(0.005)
        proc.wait()
        assert list_checkpoints(out / "checkpoints"), "a kill left no readable latest checkpoint"
    return moments


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["gan", "lora"])
def test_sigkill_at_random_moments_then_resume_ends_as_an_uninterrupted_run(trainer, tmp_path):
    if trainer == "lora":
        from toolkit.figures.dataset import write_dataset
        from toolkit.lora.tiny import make_tiny_sd

        make_tiny_sd(tmp_path / "models")
        write_dataset(tmp_path / "figures", 8, 32, seed=0)
        flags = lora_flags(tmp_path, tmp_path / "killed", max_train_steps=12, checkpointing_steps=1)
        argv = [a for k, v in flags.items() for a in ([f"--{k}"] if v is True else [f"--no-{k}"] if v is False
                                                        else [f"--{k}", str(v)])]
        module, weights = "toolkit.train_pose_lora", "pytorch_lora_weights.safetensors"
    else:
        argv = gan_argv(tmp_path / "killed", max_train_steps=12, checkpointing_steps=1, r1_gamma=1.0)
        module, weights = "toolkit.train_gan", "generator/diffusion_pytorch_model.safetensors"
    killed = tmp_path / "killed"
    moments = _kill_at_random_moments([sys.executable, "-m", module, *argv], killed, kills=2, seed=0)
    assert moments[0] == "checkpoint write" and len(moments) == 2, moments
    subprocess.run([sys.executable, "-m", module, *argv, "--resume_from_checkpoint", "latest"], cwd=ROOT, check=True,
                   capture_output=True)
    straight = [a.replace(str(killed), str(tmp_path / "straight")) for a in argv]
    subprocess.run([sys.executable, "-m", module, *straight], cwd=ROOT, check=True, capture_output=True)
    a, b = load_file(tmp_path / "straight" / weights), load_file(killed / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "summary.json").read_text())["start_step"] > 0
