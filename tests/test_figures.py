"""The synthetic figures: determinism and keypoints that match what is drawn."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.figures import POSTURES, render_figure


def test_deterministic_in_seed():
    a, b, c = render_figure(7, 64), render_figure(7, 64), render_figure(8, 64)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and np.array_equal(a.keypoints, b.keypoints)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_keypoints_inside_the_image(resolution):
    for seed in range(20):
        fig = render_figure(seed, resolution)
        assert fig.image.size == (resolution, resolution) and fig.keypoints.shape == (18, 3)
        assert (fig.keypoints[:, :2] >= 0).all() and (fig.keypoints[:, :2] < resolution).all()


LIMBS = [(1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13)]


@pytest.mark.parametrize("posture", POSTURES)
def test_body_is_drawn_along_the_limbs(posture):
    """The background is a vertical gradient (constant per row, seen at x = 0); limb midpoints must differ from it."""
    differs = []
    for seed in range(10):
        fig = render_figure(seed, 128, posture=posture)
        img = np.asarray(fig.image).astype(int)
        for a, b in LIMBS:
            x, y = ((fig.keypoints[a, :2] + fig.keypoints[b, :2]) / 2).round().astype(int)
            differs.append(np.abs(img[y, x] - img[y, 0]).sum() > 24)
    assert np.mean(differs) >= 0.9
