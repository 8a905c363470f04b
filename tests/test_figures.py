"""The synthetic figures: determinism, keypoints that match what is drawn, labels and planted distortions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.anatomy.parse import SKIN, classify, parse_figure
from toolkit.figures import DISTORTIONS, LIMBS, POSTURES, SEGMENTS, render_figure
from toolkit.pose.metrics import pck

PLANTED = [d for d in DISTORTIONS if d not in ("none", "mixed")]
VERDICT = {"extra_limb": "extra", "missing_limb": "missing", "broken_limb": "broken", "stretched_limb": "wrong_length"}


def test_deterministic_in_seed():
    a, b, c = render_figure(7, 64), render_figure(7, 64), render_figure(8, 64)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and np.array_equal(a.keypoints, b.keypoints)
    assert a.labels == b.labels
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_keypoints_inside_the_image(resolution):
    for seed in range(20):
        fig = render_figure(seed, resolution)
        assert fig.image.size == (resolution, resolution) and fig.keypoints.shape == (18, 3)
        assert (fig.keypoints[:, :2] >= 0).all() and (fig.keypoints[:, :2] < resolution).all()
        assert fig.conditioning().size == (resolution, resolution)


@pytest.mark.parametrize("posture", POSTURES)
def test_each_segment_is_drawn_where_its_keypoints_say(posture):
    """The pixel halfway between a segment's two joints wears that segment's colour (skin near the hands)."""
    hits = []
    for seed in range(10):
        fig = render_figure(seed, 128, posture=posture)
        labels = classify(np.asarray(fig.image))
        assert fig.labels["action"] == posture
        for index, (a, b) in enumerate(SEGMENTS.values()):
            x, y = ((fig.keypoints[a, :2] + fig.keypoints[b, :2]) / 2).astype(int)
            hits.append(labels[y, x] == index)
        x, y = fig.keypoints[0, :2].astype(int)  # the nose is on the face
        hits.append(labels[y, x] == SKIN)
    assert np.mean(hits) >= 0.95


def test_labels_follow_the_posture():
    sitting = [render_figure(s, 64, posture="sitting").labels for s in range(5)]
    raised = [render_figure(s, 64, posture="arms_raised").labels for s in range(5)]
    assert all(lab["posture"] == "sitting" and lab["legs"] == "bent" for lab in sitting)
    assert all(lab["arms"] == "raised" and lab["posture"] == "standing" for lab in raised)
    with pytest.raises(ValueError, match="unknown posture"):
        render_figure(0, 64, posture="flying")


def test_clean_renders_parse_clean_with_exact_keypoints():
    correct = total = 0
    for seed in range(40):
        fig = render_figure(1000 + seed, 64)
        parsed = parse_figure(np.asarray(fig.image))
        assert not parsed.distorted, (seed, parsed.to_json())
        c, t = pck(fig.keypoints, parsed.keypoints, alpha=0.1, norm="bbox")
        correct, total = correct + c, total + t
    assert correct / total >= 0.95


@pytest.mark.parametrize("kind", PLANTED)
def test_each_planted_distortion_is_labelled_and_detected(kind):
    found = []
    for seed in range(12):
        fig = render_figure(2000 + seed, 64, distortion=kind)
        assert fig.distortion["kind"] == kind and fig.distortion["limb"] in LIMBS
        parsed = parse_figure(np.asarray(fig.image))
        found.append(bool(getattr(parsed, VERDICT[kind])))
    assert np.mean(found) >= 11 / 12


def test_distortion_changes_the_image_not_the_pose():
    clean, broken = render_figure(3, 64), render_figure(3, 64, distortion="missing_limb")
    assert clean.labels == broken.labels
    assert not np.array_equal(np.asarray(clean.image), np.asarray(broken.image))
    mixed = {render_figure(s, 32, distortion="mixed").distortion["kind"] for s in range(30)}
    assert mixed == set(PLANTED)


def test_figures_cli_writes_a_prepare_poses_layout(tmp_path):
    from toolkit.figures.__main__ import main
    from toolkit.pose import load_pose

    out = tmp_path / "figs"
    assert main(["--num_images", "6", "--resolution", "48", "--output_dir", str(out), "--distortion", "mixed"]) == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["distortion"] for r in rows} <= set(PLANTED)
    for row in rows:
        stem = row["file_name"].split("/")[1].removesuffix(".png")
        assert (out / row["file_name"]).is_file() and (out / row["conditioning_image_file_name"]).is_file()
        pose = load_pose(out / "keypoints" / f"{stem}.json")
        assert pose.width == 48 and pose.people[0].body.shape == (18, 3)
        assert row["text"].startswith("a person ") and set(row["labels"]) >= {"posture", "arms", "legs"}
    assert main(["--resolution", "16", "--output_dir", str(out)]) == 2  # a clear error, not a traceback
