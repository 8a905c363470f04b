"""Synthetic human figures with ground-truth OpenPose-18 keypoints and planted distortions (toolkit.anatomy judges
them)."""

from toolkit.figures.prior import DISTORTIONS, LIMBS, POSTURES, SEGMENTS, sample_pose
from toolkit.figures.render import Figure, render_figure, render_labelled

__all__ = ["DISTORTIONS", "LIMBS", "POSTURES", "SEGMENTS", "Figure", "render_figure", "render_labelled",
           "sample_pose"]
