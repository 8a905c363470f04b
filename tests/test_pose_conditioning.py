"""Pose-conditioned DDPM training, the pose-weighted loss, and generation from given poses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_argv
from PIL import Image

from toolkit.figures.dataset import write_dataset
from toolkit.training.losses import limb_mask, pose_pixel_weights


def _maps(size: int) -> torch.Tensor:
    from toolkit.figures import render_figure

    pose = np.array(render_figure(4, size).conditioning())
    return torch.from_numpy(pose).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)  # (1, 3, S, S)


def test_limb_mask_covers_the_skeleton_at_any_resolution():
    maps = _maps(64)
    full, latent = limb_mask(maps, (64, 64)), limb_mask(maps, (8, 8))
    assert full.shape == (1, 1, 64, 64) and latent.shape == (1, 1, 8, 8)
    assert set(full.unique().tolist()) == {0.0, 1.0} and 0.03 < full.mean() < 0.5
    drawn = maps.amax(1, keepdim=True) > -0.8
    assert full[drawn].min() == 1.0  # every drawn pixel is inside, plus a one-pixel margin
    assert latent.mean() > full.mean()  # coarse cells count if any pixel under them is drawn
    weights = pose_pixel_weights(maps, (64, 64), 4.0)
    assert set(weights.unique().tolist()) == {1.0, 5.0}
    assert limb_mask(-torch.ones(2, 3, 16, 16), (16, 16)).sum() == 0  # a black map: no limbs


def test_pose_conditioned_run_saves_a_pose_pipeline_that_follows_given_poses(tmp_path):
    from toolkit.ddpm.pipeline import PoseDDPMPipeline
    from toolkit.train_unet import main

    out = tmp_path / "run"
    assert main(tiny_argv(out, conditioning="pose", pose_loss_weight=4.0, resolution=32, max_train_steps=3,
                          validation_steps=2)) == 0
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "PoseDDPMPipeline"
    grid = Image.open(out / "samples" / "step_000002.png")
    assert grid.width > grid.height  # pose | sample pairs side by side
    pipe = PoseDDPMPipeline.from_pretrained(out)
    assert pipe.unet.config.in_channels == 6 and pipe.unet.config.out_channels == 3
    poses = [Image.fromarray(np.asarray(_maps_image(s))) for s in range(2)]
    a = pipe(poses, num_inference_steps=2, seed=1, output_type="np")
    b = pipe(poses, num_inference_steps=2, seed=1, output_type="np")
    other = pipe(poses[::-1], num_inference_steps=2, seed=1, output_type="np")
    assert a.shape == (2, 32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, other)  # the pose map reaches the UNet


def _maps_image(seed: int) -> Image.Image:
    from toolkit.figures import render_figure

    return render_figure(seed, 32).conditioning()


def test_pose_weighted_loss_changes_training_and_flips_are_off(tmp_path, capsys):
    from toolkit.train_unet import main

    losses = {}
    for weight in (0.0, 4.0):
        out = tmp_path / f"w{weight}"
        assert main(tiny_argv(out, conditioning="pose", pose_loss_weight=weight, max_train_steps=2)) == 0
        losses[weight] = json.loads((out / "summary.json").read_text())["smoothed_loss"]
    assert losses[4.0] > losses[0.0] and np.isfinite(list(losses.values())).all()
    assert "random flips are off" in capsys.readouterr().out


def test_train_on_a_figures_folder_and_sample_from_its_poses(tmp_path, capsys):
    from toolkit.sample import main as sample
    from toolkit.train_unet import main

    data = write_dataset(tmp_path / "data", 6, 32, seed=2)
    out = tmp_path / "run"
    assert main(tiny_argv(out, conditioning="pose", train_data_dir=str(data), resolution=32, max_train_steps=2)) == 0
    gen = tmp_path / "gen"
    assert sample(["--pipeline", str(out), "--poses", str(data / "keypoints"), "--num_inference_steps", "2",
                   "--output_dir", str(gen), "--num_images", "4"]) == 0
    assert sorted(p.name for p in gen.glob("0*.png")) == [f"00000{i}.png" for i in range(4)]  # named like the poses
    assert sample(["--pipeline", str(out), "--num_inference_steps", "2"]) == 2
    assert "pass --poses" in capsys.readouterr().err


def test_pose_conditioning_on_a_plain_folder_is_a_clear_error(tmp_path, capsys):
    from toolkit.train_unet import main

    folder = tmp_path / "plain"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "a.png")
    assert main(tiny_argv(tmp_path / "run", conditioning="pose", train_data_dir=str(folder))) == 2
    assert "metadata.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1"])
def test_negative_pose_loss_weight_is_rejected(tmp_path, value, capsys):
    from toolkit.train_unet import main

    assert main(tiny_argv(tmp_path / "run", pose_loss_weight=value)) == 2
    assert "pose_loss_weight" in capsys.readouterr().err


def test_figures_render_on_the_fly_without_a_cache():
    from toolkit.data.dataset import MicroBatches, build_train_images
    from toolkit.data.sources import FiguresSource

    images = build_train_images(FiguresSource(10_000_000, 32), 32, center_crop=True, cache="never",
                                with_conditioning=True)
    assert images.cached is None and len(images) == 10_000_000  # nothing decoded up front
    batch, failed = MicroBatches(images, 4, seed=0, random_flip=False)[123_456]
    assert batch.shape == (4, 6, 32, 32) and not failed and batch[:, 3:].amax() > 0  # images and their pose maps
