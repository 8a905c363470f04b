"""OpenPose conditioning maps drawn exactly as controlnet_aux draws them for ControlNet 1.1 OpenPose models.

Body: on a black RGB canvas, each of the 17 limbs is a filled ellipse (half-width 4 px) at 0.6x its palette colour,
then each joint a filled circle of radius 4 at full colour. Hands: 20 edges as 2 px lines coloured by hue, joints as
radius-4 blue dots. Face: radius-3 white dots. Body first, then hands, then face. Points below `threshold`
confidence are not drawn, nor limbs that touch them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from matplotlib.colors import hsv_to_rgb

from toolkit.pose.keypoints import LIMBS_18, Person, Pose

PALETTE_18 = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
              (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
              (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
STICKWIDTH = 4
HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]
DEFAULT_THRESHOLD = 0.3


def draw_body(canvas: np.ndarray, body: np.ndarray, threshold: float = DEFAULT_THRESHOLD, scale: float = 1.0) -> None:
    """Draw one body-18 skeleton (18, 3) in pixels onto an RGB uint8 canvas (H, W, 3), in place.

    `scale` multiplies the stick half-width and joint radius (4 px, made for 512 px maps), e.g. 64 / 512 for a
    64 px map; 1.0 draws exactly as controlnet_aux does.
    """
    stick = max(1, round(STICKWIDTH * scale))
    for i, (a, b) in enumerate(LIMBS_18):
        pa, pb = body[a], body[b]
        if pa[2] < threshold or pb[2] < threshold:
            continue
        length = math.hypot(pa[0] - pb[0], pa[1] - pb[1])
        angle = math.degrees(math.atan2(pa[1] - pb[1], pa[0] - pb[0]))
        centre = (int((pa[0] + pb[0]) / 2), int((pa[1] + pb[1]) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), stick), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in PALETTE_18[i]])
    for i, (x, y, conf) in enumerate(body):
        if conf >= threshold:
            cv2.circle(canvas, (int(x), int(y)), stick, PALETTE_18[i], thickness=-1)


def draw_hand(canvas: np.ndarray, hand: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> None:
    """Draw one 21-point hand (21, 3) in pixels, in place."""
    for i, (a, b) in enumerate(HAND_EDGES):
        pa, pb = hand[a], hand[b]
        if pa[2] < threshold or pb[2] < threshold:
            continue
        colour = hsv_to_rgb([i / len(HAND_EDGES), 1.0, 1.0]) * 255
        cv2.line(canvas, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), colour.tolist(), thickness=2)
    for x, y, conf in hand:
        if conf >= threshold:
            cv2.circle(canvas, (int(x), int(y)), 4, (0, 0, 255), thickness=-1)


def draw_face(canvas: np.ndarray, face: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> None:
    """Draw 68 face landmarks (68, 3) in pixels as white dots, in place."""
    for x, y, conf in face:
        if conf >= threshold:
            cv2.circle(canvas, (int(x), int(y)), 3, (255, 255, 255), thickness=-1)


def render_person(canvas: np.ndarray, person: Person, threshold: float = DEFAULT_THRESHOLD, scale: float = 1.0) -> None:
    """Body, then hands, then face of one person, in place."""
    draw_body(canvas, person.body, threshold, scale)
    for hand in (person.left_hand, person.right_hand):
        if hand is not None:
            draw_hand(canvas, hand, threshold)
    if person.face is not None:
        draw_face(canvas, person.face, threshold)


def render_pose(pose: Pose, threshold: float = DEFAULT_THRESHOLD, scale: float = 1.0) -> np.ndarray:
    """The OpenPose conditioning map of a pose: uint8 RGB (H, W, 3) on black (`scale`: see draw_body)."""
    canvas = np.zeros((pose.height, pose.width, 3), dtype=np.uint8)
    for person in pose.people:
        render_person(canvas, person, threshold, scale)
    return canvas
