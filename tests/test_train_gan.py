"""train_gan.py end to end on tiny networks: both networks train, resume is exact, pose conditioning, outputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from toolkit.gan.models import Generator
from toolkit.gan.outputs import generate
from toolkit.train_gan import main
from toolkit.training.checkpoints import list_checkpoints


def gan_argv(output_dir, **overrides) -> list[str]:
    """Flags for a seconds-long GAN run: narrow networks, 16 px, a handful of synthetic figures, fp32."""
    flags = {"output_dir": str(output_dir), "resolution": 16, "train_batch_size": 4, "num_figures": 12,
             "max_train_steps": 4, "validation_steps": 100, "checkpointing_steps": 100, "num_validation_images": 4,
             "z_dim": 8, "gan_channels": 4, "mixed_precision": "no", "report_to": "none", "num_cpu_threads": 2}
    flags.update(overrides)
    argv = []
    for key, value in flags.items():
        argv += [f"--{key}"] if value is True else [f"--no-{key}"] if value is False else [f"--{key}", str(value)]
    return argv


def networks(folder) -> dict[str, torch.Tensor]:
    """Both networks' weights in a checkpoint folder."""
    return {f"{name}.{k}": v for name in ("generator", "discriminator")
            for k, v in load_file(folder / name / "diffusion_pytorch_model.safetensors").items()}


@pytest.mark.parametrize("extra", [
    dict(model="resnet", gan_loss="hinge", r1_gamma=1.0),
    dict(model="dcgan", gan_loss="ns", diffaugment="", use_ema=False),
    dict(model="dcgan", gan_loss="wgan", gp_weight=10.0, n_critic=2, d_learning_rate=4e-4),
])
def test_a_few_steps_train_both_networks_with_a_finite_loss(tmp_path, extra):
    out = tmp_path / "run"
    assert main(gan_argv(out, checkpointing_steps=1, **extra)) == 0
    first, last = networks(out / "checkpoints/checkpoint-2"), networks(out / "checkpoints/checkpoint-4")
    for prefix in ("generator.", "discriminator."):
        assert any(not torch.equal(first[k], last[k]) for k in first if k.startswith(prefix)), prefix
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["smoothed_loss"]) and summary["steps_done"] == 4
    assert (out / "generator" / "config.json").is_file() and (out / "samples" / "final.png").is_file()


def test_resume_gives_the_same_networks_as_an_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = dict(max_train_steps=6, gradient_accumulation_steps=2, r1_gamma=1.0, n_critic=2)
    assert main(gan_argv(straight, **common)) == 0
    assert main(gan_argv(resumed, checkpointing_steps=3, **common)) == 0
    for path in list_checkpoints(resumed / "checkpoints")[1:]:  # as if killed after step 3
        shutil.rmtree(path)
    shutil.rmtree(resumed / "generator")
    assert main(gan_argv(resumed, checkpointing_steps=3, resume_from_checkpoint="latest", **common)) == 0
    a, b = networks(straight / "checkpoints/checkpoint-6"), networks(resumed / "checkpoints/checkpoint-6")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ema = [load_file(run / "generator" / "diffusion_pytorch_model.safetensors") for run in (straight, resumed)]
    assert all(torch.equal(ema[0][k], ema[1][k]) for k in ema[0])


def test_sampling_leaves_training_alone_and_the_checkpoint_ema_samples_as_the_generator(tmp_path):
    quiet, busy = tmp_path / "quiet", tmp_path / "busy"
    assert main(gan_argv(quiet, max_train_steps=6)) == 0  # validates and checkpoints at the end only
    assert main(gan_argv(busy, max_train_steps=6, validation_steps=2, checkpointing_steps=2)) == 0
    a, b = networks(quiet / "checkpoints/checkpoint-6"), networks(busy / "checkpoints/checkpoint-6")
    assert any("running_mean" in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)  # buffers included
    final = load_file(busy / "generator" / "diffusion_pytorch_model.safetensors")
    ema = load_file(busy / "checkpoints/checkpoint-6/generator_ema/diffusion_pytorch_model.safetensors")
    assert final.keys() == ema.keys() and all(torch.equal(final[k], ema[k]) for k in final)
    live = networks(busy / "checkpoints/checkpoint-6")
    assert not torch.equal(final["to_rgb.0.running_mean"], live["generator.to_rgb.0.running_mean"])


def test_pose_conditioned_run_saves_a_generator_that_follows_poses(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(gan_argv(out, conditioning="pose", validation_steps=2)) == 0
    gen = Generator.from_pretrained(out / "generator")
    assert gen.config.pose and gen.config.resolution == 16
    empty, stick = -torch.ones(2, 3, 16, 16), -torch.ones(2, 3, 16, 16)
    stick[:, 1, 3:13, 7:9] = 1.0
    assert not np.array_equal(generate(gen, 2, seed=0, maps=empty), generate(gen, 2, seed=0, maps=stick))
    assert (out / "samples" / "step_000002.png").is_file()  # pose | sample pairs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diversity"] and summary["diversity"][-1][0] == 4
    assert "diversity" in capsys.readouterr().out


def test_sample_gan_reproduces_the_saved_generator(tmp_path):
    from toolkit.sample import main as sample_main

    out = tmp_path / "run"
    assert main(gan_argv(out, max_train_steps=2)) == 0
    for name in ("a", "b"):
        argv = ["gan", "--generator", str(out / "generator"), "--num_images", "3", "--output_dir", str(tmp_path / name)]
        assert sample_main(argv) == 0
    first, again = (np.asarray(Image.open(tmp_path / n / "00002.png")) for n in ("a", "b"))
    assert first.shape == (16, 16, 3) and np.array_equal(first, again)


def test_bad_input_gets_one_line_errors(tmp_path, capsys):
    from toolkit.sample import main as sample_main

    assert main(gan_argv(tmp_path / "run", resolution=28)) == 2
    assert "power of two" in capsys.readouterr().err
    assert main(gan_argv(tmp_path / "run", diffaugment="color,rotate")) == 2
    assert "diffaugment: unknown ['rotate']" in capsys.readouterr().err
    assert main(gan_argv(tmp_path / "run", train_data_dir=str(tmp_path / "missing"))) == 2
    assert "missing" in capsys.readouterr().err
    assert sample_main(["gan", "--generator", str(tmp_path)]) == 2
    assert "not a saved generator" in capsys.readouterr().err
    assert sample_main(["gan", "--pipeline", str(tmp_path)]) == 2
    assert "an option of `toolkit.sample ddpm`" in capsys.readouterr().err
    assert main(gan_argv(tmp_path / "pose", conditioning="pose", max_train_steps=1)) == 0
    capsys.readouterr()
    poses = tmp_path / "poses"
    poses.mkdir()
    (poses / "a.json").write_text('{"people": []}')  # no canvas size: not a pose file this can draw
    assert sample_main(["gan", "--generator", str(tmp_path / "pose" / "generator"), "--poses", str(poses)]) == 2
    err = capsys.readouterr().err
    assert "a.json: not an OpenPose JSON or pose-map image" in err and "Traceback" not in err
