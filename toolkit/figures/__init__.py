"""Synthetic human figures with ground-truth OpenPose-18 keypoints."""

from toolkit.figures.render import POSTURES, Figure, render_figure, sample_pose

__all__ = ["POSTURES", "Figure", "render_figure", "sample_pose"]
