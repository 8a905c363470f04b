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


def test_pose_weighted_loss_changes_training(tmp_path):
    from toolkit.train_unet import main

    losses = {}
    for weight in (0.0, 4.0):
        out = tmp_path / f"w{weight}"
        assert main(tiny_argv(out, conditioning="pose", pose_loss_weight=weight, max_train_steps=2)) == 0
        losses[weight] = json.loads((out / "summary.json").read_text())["smoothed_loss"]
    assert losses[4.0] > losses[0.0] and np.isfinite(list(losses.values())).all()


def test_train_on_a_figures_folder_and_sample_from_its_poses(tmp_path, capsys):
    from toolkit.sample import main as sample
    from toolkit.train_unet import main

    data = write_dataset(tmp_path / "data", 6, 32, seed=2)
    out = tmp_path / "run"  # conditioning left at train_unet.py's default, auto: a pose folder means pose
    assert main(tiny_argv(out, conditioning=None, train_data_dir=str(data), resolution=32, max_train_steps=2)) == 0
    assert "conditioning: pose" in (out / "config.yaml").read_text().splitlines()
    assert json.loads((out / "unet" / "config.json").read_text())["in_channels"] == 6
    assert f"--pipeline {out} --poses POSE_JSON_DIR" in capsys.readouterr().out  # the summary's sampling hint
    gen = tmp_path / "gen"
    assert sample(["--pipeline", str(out), "--poses", str(data / "keypoints"), "--num_inference_steps", "2",
                   "--output_dir", str(gen), "--num_images", "4"]) == 0
    assert sorted(p.name for p in gen.glob("0*.png")) == [f"00000{i}.png" for i in range(4)]  # named like the poses
    assert sample(["--pipeline", str(out), "--num_inference_steps", "2"]) == 2
    assert "pass --poses" in capsys.readouterr().err


def test_conditioning_auto_follows_the_data(tmp_path):
    from toolkit.config import from_dict
    from toolkit.data.dataset import resolve_conditioning
    from toolkit.ddpm.config import TrainUNetConfig
    from toolkit.gan.config import TrainGANConfig
    from toolkit.training.runs import total_steps

    plain = tmp_path / "plain"
    plain.mkdir()
    Image.new("RGB", (8, 8)).save(plain / "a.png")
    (plain / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a caption"}\n')  # an imagefolder
    posed = write_dataset(tmp_path / "posed", 2, 16, seed=0)

    def resolved(cls=TrainUNetConfig, **options) -> str:
        return resolve_conditioning(from_dict(cls, options)).conditioning

    assert from_dict(TrainUNetConfig, {}).conditioning == "auto" and from_dict(TrainGANConfig, {}).conditioning == "none"
    assert resolved() == "pose"  # the built-in figures
    assert resolved(train_data_dir=str(posed)) == "pose"
    assert resolved(train_data_dir=str(plain)) == "none"
    assert resolved(dataset_name="someone/faces") == "none"
    assert resolved(train_data_dir=str(posed), conditioning="none") == "none"  # an explicit choice stays
    assert resolved(TrainGANConfig, conditioning="auto") == "pose"
    assert total_steps(from_dict(TrainUNetConfig, {}), 10, 1) == 800  # the no-argument run's length
    assert total_steps(from_dict(TrainGANConfig, {}), 10, 1) == 1000


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
    from toolkit.data.augment import AugmentSettings
    from toolkit.data.dataset import MicroBatches, build_train_images
    from toolkit.data.sources import FiguresSource

    images = build_train_images(FiguresSource(10_000_000, 32), 32, center_crop=True, cache="never",
                                with_conditioning=True)
    assert images.cached is None and len(images) == 10_000_000  # nothing decoded up front
    batch, failed = MicroBatches(images, 4, seed=0, settings=AugmentSettings())[123_456]
    pixels = batch.pixels
    assert pixels.shape == (4, 6, 32, 32) and not failed and pixels[:, 3:].amax() > 0  # images and their pose maps


def test_every_path_draws_the_same_map_from_the_same_keypoints(tmp_path):
    """Figures, the DDPM data, the pose-LoRA data and sampling all fit and draw through toolkit.pose.conditioning."""
    from toolkit.config import from_dict
    from toolkit.data.dataset import build_train_images
    from toolkit.data.folders import read_poses
    from toolkit.data.sources import open_source
    from toolkit.lora.config import PoseLoraConfig
    from toolkit.lora.data import open_data
    from toolkit.pose import load_pose, pose_map

    data = write_dataset(tmp_path / "data", 2, 64, seed=5)  # maps drawn at 64 px, used at 32 px
    expected = pose_map(load_pose(data / "keypoints" / "000000.json"), 32)  # (32, 32, 3) uint8
    source, _ = open_source(train_data_dir=str(data), dataset_name=None, conditioning_column="conditioning_image")
    ddpm = build_train_images(source, 32, center_crop=True, cache="always", with_conditioning=True).get(0)[3:]
    cfg = from_dict(PoseLoraConfig, {"pretrained_model_name_or_path": "unused", "train_data_dir": str(data),
                                     "resolution": 32})
    lora = open_data(cfg).example(0).pose_map
    _, sampled = read_poses(str(data / "keypoints"), 32, 1)
    sampled = ((sampled[0] + 1) * 127.5).round().to(torch.uint8)
    for name, drawn in (("ddpm data", ddpm), ("lora data", lora), ("sampling", sampled)):
        assert torch.equal(drawn.permute(1, 2, 0), torch.from_numpy(expected)), name
    resized = np.asarray(Image.open(data / "conditioning" / "000000.png").resize((32, 32), Image.Resampling.BICUBIC))
    assert not np.array_equal(resized, expected)  # drawn at 32 px, not a blurred 64 px map


def test_one_thickness_rule_at_every_size():
    from toolkit.pose import Person, Pose
    from toolkit.pose.conditioning import draw_map, fit_pose

    def limb_thickness(size: int, wide: int = 1) -> int:
        body = np.zeros((18, 3))
        body[1], body[2] = (0.3 * size, 0.5 * size, 1), (0.7 * size, 0.5 * size, 1)  # neck -> right shoulder
        drawn = draw_map(Pose(wide * size, size, [Person(body)]))
        return int((drawn[:, size // 2].max(1) > 0).sum())  # rows lit in the column through the limb's middle

    thickness = {size: limb_thickness(size) for size in (32, 64, 512, 1024)}
    assert thickness[32] == thickness[64] == 3  # never thinner than 1 px either side
    assert thickness[512] == 9 and thickness[1024] == 17  # controlnet_aux's 4 px at 512, in proportion above
    assert limb_thickness(512, wide=3) == 9  # a wide photo's map follows its short side, as its training crop does
    wide = Pose(200, 100, [Person(np.tile([150.0, 50.0, 1.0], (18, 1)))])
    fitted = fit_pose(wide, 50)  # short side to 50 px, centre crop: x 150 -> 75 - 25 = 50
    assert (fitted.width, fitted.height) == (50, 50) and np.allclose(fitted.people[0].body[0], [50, 25, 1])
