"""The pose layer: OpenPose keypoints, converters, conditioning maps and left/right flips."""

from toolkit.pose.conditioning import draw_map, fit_pose, pose_map
from toolkit.pose.draw import PALETTE_18, render_pose
from toolkit.pose.keypoints import BODY_18, LIMBS_18, Person, Pose, flip_pose, load_pose, save_pose

__all__ = ["BODY_18", "LIMBS_18", "PALETTE_18", "Person", "Pose", "draw_map", "fit_pose", "flip_pose", "load_pose",
           "pose_map", "render_pose", "save_pose"]
