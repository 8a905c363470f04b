"""train_unet.py end to end, in process: outputs, round trips, exact resume, rotation, NaN stop, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_argv
from diffusers import DDIMScheduler, DDPMPipeline
from PIL import Image
from safetensors.torch import load_file

from toolkit.ddpm.trainer import DDPMTrainer
from toolkit.train_unet import main
from toolkit.training import loop
from toolkit.training.checkpoints import list_checkpoints

UNET_FILE = "unet/diffusion_pytorch_model.safetensors"


def weights(folder):
    return load_file(str(folder / UNET_FILE))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_run_leaves_pipeline_samples_logs_config_and_summary(trained_run):
    out = trained_run
    for name in ("model_index.json", UNET_FILE, "scheduler/scheduler_config.json", "config.yaml", "summary.json",
                 "samples/final.png", "samples/step_000002.png", "loss.png"):
        assert (out / name).is_file(), name
    events = list((out / "logs" / "train_unet").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard events under the trainer's name"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_done"] == 4 and summary["images_per_second"] > 0 and summary["skipped_files"] == []
    assert np.isfinite(summary["smoothed_loss"])
    assert Image.open(out / "samples/final.png").size == (2 + 2 * 18, 2 + 2 * 18)  # 2x2 grid of 16 px


def test_saved_pipeline_loads_and_generates(trained_run):
    pipe = DDPMPipeline.from_pretrained(trained_run)
    assert pipe.unet.config.sample_size == 16
    out = pipe(batch_size=2, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 16, 16, 3) and np.isfinite(out.images).all()


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = dict(max_train_steps=6, gradient_accumulation_steps=2, dropout=0.1, random_flip=True)
    assert main(tiny_argv(straight, **common)) == 0
    assert main(tiny_argv(resumed, checkpointing_steps=3, **common)) == 0
    # Pretend the run was killed after step 3: drop the final checkpoint and the pipeline, then resume.
    for path in list_checkpoints(resumed / "checkpoints")[1:]:
        __import__("shutil").rmtree(path)
    (resumed / UNET_FILE).unlink()
    assert main(tiny_argv(resumed, checkpointing_steps=3, resume_from_checkpoint="latest", **common)) == 0
    assert_same_weights(straight, resumed)  # the EMA weights of the pipeline
    assert_same_weights(straight / "checkpoints/checkpoint-6", resumed / "checkpoints/checkpoint-6")  # raw weights
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["start_step"] == 3 and summary["resumed_from"].endswith("checkpoint-3")
    history = [json.loads((run / "checkpoints/checkpoint-6/trainer_state.json").read_text())["loss_history"]
               for run in (straight, resumed)]
    assert len(history[0]) == 6 and history[0] == history[1]  # the same losses, step for step


def test_resume_latest_without_checkpoint_starts_fresh(tmp_path, capsys):
    assert main(tiny_argv(tmp_path / "run", max_train_steps=2, resume_from_checkpoint="latest")) == 0
    assert "no checkpoint" in capsys.readouterr().out


def test_resume_from_a_missing_path_is_an_error(tmp_path, capsys):
    assert main(tiny_argv(tmp_path / "run", resume_from_checkpoint=str(tmp_path / "nope"))) == 2
    assert "not a complete checkpoint" in capsys.readouterr().err


def test_checkpoint_rotation(tmp_path):
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=5, checkpointing_steps=1, checkpoints_total_limit=2)) == 0
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-4", "checkpoint-5"]


def test_a_kill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = loop.save_checkpoint

    def dying_save(accelerator, root, step, state, *, total_limit):
        if step == 4:  # simulate a kill in the middle of writing the second checkpoint
            accelerator.save_state(str(root / f".checkpoint-{step}.tmp"))
            raise KeyboardInterrupt
        return real_save(accelerator, root, step, state, total_limit=total_limit)

    monkeypatch.setattr(loop, "save_checkpoint", dying_save)
    assert main(tiny_argv(out, max_train_steps=4, checkpointing_steps=2)) == 130
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2"]
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert main(tiny_argv(out, max_train_steps=4, checkpointing_steps=2, resume_from_checkpoint="latest")) == 0
    assert not list((out / "checkpoints").glob(".checkpoint-*"))  # the partial save was cleaned up
    assert json.loads((out / "summary.json").read_text())["start_step"] == 2


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real_loss = DDPMTrainer.loss
    calls = {"n": 0}

    def exploding_loss(self, phase, x0, generator):
        calls["n"] += 1
        loss = real_loss(self, phase, x0, generator)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(DDPMTrainer, "loss", exploding_loss)
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=4, checkpointing_steps=2, max_nan_steps=1)) == 2
    err = capsys.readouterr().err
    assert "loss became nan or inf at step 3:" in err and "Last good checkpoint" in err and "checkpoint-2" in err
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-2"]
    assert not (out / "model_index.json").exists()


def test_own_folder_with_a_corrupt_file(tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (24, 30), dtype=np.uint8), mode="L").save(data / f"{i}.pgm")
    (data / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "run"
    assert main(tiny_argv(out, train_data_dir=str(data), max_train_steps=2)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["skipped_files"]) == 1 and summary["skipped_files"][0].endswith("corrupt.jpg")


def test_wrong_path_is_a_clear_error_without_traceback(tmp_path, capsys):
    assert main(tiny_argv(tmp_path / "run", train_data_dir=str(tmp_path / "missing"))) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err


def test_progressive_stages_continue_the_same_weights(tmp_path):
    recipe = tmp_path / "stages.yaml"
    recipe.write_text("stages:\n  - {resolution: 8, steps: 2}\n  - {resolution: 16, steps: 2, train_batch_size: 2}\n")
    out = tmp_path / "run"
    assert main(["--config", str(recipe), *tiny_argv(out, checkpointing_steps=1)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_steps"] == 4 and summary["images_seen"] == 2 * 4 + 2 * 2
    assert DDPMPipeline.from_pretrained(out).unet.config.sample_size == 16
    assert Image.open(out / "samples/final.png").size == (2 + 2 * 18, 2 + 2 * 18)


@pytest.mark.parametrize("extra", [
    dict(prediction_type="v_prediction", snr_gamma=5.0, noise_offset=0.05),
    dict(prediction_type="sample", mixed_precision="bf16", validation_scheduler="unipc", use_ema=False,
         snr_gamma="none"),
    dict(prediction_type="v_prediction", snr_gamma="none", edm_sigma_data=0.5),
])
def test_training_variants_stay_finite(tmp_path, extra):
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=3, **extra)) == 0
    assert np.isfinite(json.loads((out / "summary.json").read_text())["smoothed_loss"])
    assert all(torch.isfinite(w).all() for w in weights(out).values())
    # stock diffusers samples it: the saved scheduler config tells any scheduler what the UNet predicts
    pipe = DDPMPipeline.from_pretrained(out)
    assert pipe.scheduler.config.prediction_type == extra["prediction_type"]
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    images = pipe(batch_size=1, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def test_only_trainable_unet_weights_change(tmp_path):
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=2, use_ema=False, checkpointing_steps=1)) == 0
    first, last = weights(out / "checkpoints/checkpoint-1"), weights(out / "checkpoints/checkpoint-2")
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_a_fresh_run_never_mixes_with_an_earlier_runs_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_argv(out, max_train_steps=2, checkpointing_steps=1)) == 0
    assert main(tiny_argv(out, max_train_steps=2, checkpointing_steps=1)) == 2
    assert "already holds checkpoints of an earlier run" in capsys.readouterr().err
    assert main(tiny_argv(out, max_train_steps=1, checkpointing_steps=1, overwrite_output_dir=True)) == 0
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-1"]
