"""Pose-consistent augmentation of training items, with EDM's non-leaking labels.

Each training item is an image, optionally with its pose (keypoints on the image's canvas) or a pose-map image. An
augmentation draws its parameters from the step's generator, applies one affine transform (flip, scale, rotation,
translation about the centre) to the image and to the keypoints alike, redraws the OpenPose map from the moved
keypoints (a mirrored map would swap the colours of left and right; a flip swaps the joints instead, unless the
item's sides are told apart by something a mirror keeps, as the figures' hues), and jitters the image's colours
only. A map given only as an image is warped with its image, and never flipped.

`labels` (Karras et al. 2022, "non-leaking augmentation") describe what was applied (flips aside); the trainer feeds them to the
UNet as extra conditioning during training and zeros when sampling, so the model learns from augmented images
without generating augmented ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.pose.conditioning import draw_map
from toolkit.pose.keypoints import Person, Pose, flip_pose
from toolkit.training.config import ScratchImageConfig

NUM_LABELS = 8  # log scale, sin and cos - 1 of the angle, x and y shift, brightness, contrast, saturation


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities (each transform applied to a sample with its own) and strengths; all 0: no augmentation."""

    flip_p: float = 0.0
    scale_p: float = 0.0
    scale: float = 0.2  # zoom factor drawn log-uniformly in [1 / (1 + scale), 1 + scale]
    rotate_p: float = 0.0
    rotate_degrees: float = 10.0
    translate_p: float = 0.0
    translate: float = 0.1  # shift drawn uniformly in +-translate of the image side
    color_p: float = 0.0
    color: float = 0.2  # brightness, contrast and saturation factors drawn in 1 +- color

    @property
    def geometric(self) -> bool:
        """Whether any transform moves pixels (and keypoints)."""
        return bool(self.flip_p or self.scale_p or self.rotate_p or self.translate_p)

    @property
    def any(self) -> bool:
        """Whether anything is augmented."""
        return self.geometric or bool(self.color_p)

    @property
    def labelled(self) -> bool:
        """Whether some transform gets a label (all but flips): the UNet must then be told what was applied."""
        return bool(self.scale_p or self.rotate_p or self.translate_p or self.color_p)


def settings_of(cfg: ScratchImageConfig) -> AugmentSettings:
    """The augmentation a trainer's options ask for (flips at 0.5 with --random_flip)."""
    return AugmentSettings(0.5 if cfg.random_flip else 0.0, cfg.aug_scale_p, cfg.aug_scale, cfg.aug_rotate_p,
                           cfg.aug_rotate_degrees, cfg.aug_translate_p, cfg.aug_translate, cfg.aug_color_p,
                           cfg.aug_color)


@dataclass(frozen=True)
class Draw:
    """The parameters of one sample's augmentation (identity by default)."""

    flip: bool = False
    scale: float = 1.0
    angle: float = 0.0  # radians, counter-clockwise on screen
    shift: tuple[float, float] = (0.0, 0.0)  # fractions of the width and height
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0

    def labels(self) -> torch.Tensor:
        """(NUM_LABELS,) float32, all zero for the identity. Flips are left out, as EDM leaves out its dataset
        x-flips: a mirrored person is a person, so a flip has nothing to leak."""
        return torch.tensor([math.log(self.scale), math.sin(self.angle), math.cos(self.angle) - 1, *self.shift,
                             self.brightness - 1, self.contrast - 1, self.saturation - 1])


def draw(settings: AugmentSettings, generator: torch.Generator) -> Draw:
    """One sample's parameters; every draw is made whatever the settings, so the stream of random numbers, and the
    batches after it, do not depend on which transforms are on."""
    u = torch.rand(12, generator=generator).tolist()
    on = lambda p, x: p > 0 and x < p  # noqa: E731
    bound = math.log1p(settings.scale)
    return Draw(
        flip=on(settings.flip_p, u[0]),
        scale=math.exp((2 * u[2] - 1) * bound) if on(settings.scale_p, u[1]) else 1.0,
        angle=math.radians((2 * u[4] - 1) * settings.rotate_degrees) if on(settings.rotate_p, u[3]) else 0.0,
        shift=((2 * u[6] - 1) * settings.translate, (2 * u[7] - 1) * settings.translate)
        if on(settings.translate_p, u[5]) else (0.0, 0.0),
        **({"brightness": 1 + (2 * u[9] - 1) * settings.color, "contrast": 1 + (2 * u[10] - 1) * settings.color,
            "saturation": 1 + (2 * u[11] - 1) * settings.color} if on(settings.color_p, u[8]) else {}))


def pixel_matrix(d: Draw, width: int, height: int) -> np.ndarray:
    """(3, 3) map from a source pixel centre (x, y, 1) to where it lands: flip, then scale and rotate about the image
    centre, then shift."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    flip = np.diag([-1.0 if d.flip else 1.0, 1.0, 1.0])
    c, s = math.cos(d.angle), math.sin(d.angle)
    rotate_scale = np.array([[c * d.scale, s * d.scale, 0.0], [-s * d.scale, c * d.scale, 0.0], [0.0, 0.0, 1.0]])
    to_centre = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, cx + d.shift[0] * width], [0.0, 1.0, cy + d.shift[1] * height], [0.0, 0.0, 1.0]])
    return back @ rotate_scale @ flip @ to_centre


def warp(image: torch.Tensor, matrix: np.ndarray, *, fill_border: bool = True) -> torch.Tensor:
    """`image` float (C, H, W) moved by the pixel `matrix` (bilinear); outside the source, the border pixels are
    repeated (`fill_border`) or zeros (a pose map's background)."""
    _, h, w = image.shape
    inverse = np.linalg.inv(matrix)  # sampling asks, for each output pixel, where it came from
    # grid_sample's coordinates: -1..1 over pixel centres (align_corners=True): x_norm = 2 x / (w - 1) - 1.
    norm = np.array([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]])
    theta = (norm @ inverse @ np.linalg.inv(norm))[:2]
    grid = F.affine_grid(torch.tensor(theta, dtype=torch.float32)[None], [1, *image.shape], align_corners=True)
    # Border, not EDM's reflection: a reflected margin would mirror a limb near the edge into an extra one.
    out = F.grid_sample(image[None], grid, mode="bilinear", align_corners=True,
                        padding_mode="border" if fill_border else "zeros")
    return out[0]


def move_pose(pose: Pose, matrix: np.ndarray, flipped: bool) -> Pose:
    """The keypoints under the pixel `matrix`; with `flipped` left and right joints (and hands) are also swapped, as
    the person's left becomes the image's right (pass False for a flip that keeps sides: the matrix mirrors)."""
    if flipped:  # flip_pose mirrors and swaps; keep the swap only, since the matrix holds the mirroring
        mirrored = flip_pose(pose)
        pose = Pose(pose.width, pose.height, [_map_person(p, lambda a: _mirror_back(a, pose.width))
                                              for p in mirrored.people])

    def moved(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        xy = np.c_[a[:, :2], np.ones(len(a))] @ matrix.T
        return np.c_[xy[:, :2], a[:, 2:]]

    return Pose(pose.width, pose.height, [_map_person(p, moved) for p in pose.people])


def _mirror_back(a: np.ndarray | None, width: int) -> np.ndarray | None:
    """Undo flip_pose's mirroring of x (keeping its left/right swap): the pixel matrix mirrors x itself."""
    if a is None:
        return None
    out = a.copy()
    found = out[:, 2] > 0
    out[found, 0] = width - 1 - out[found, 0]
    return out


def _map_person(p: Person, f) -> Person:
    return Person(f(p.body), f(p.left_hand), f(p.right_hand), f(p.face))


def jitter_colour(image: torch.Tensor, d: Draw) -> torch.Tensor:
    """Brightness, contrast and saturation of an image float (3, H, W) in [0, 255]."""
    if (d.brightness, d.contrast, d.saturation) == (1.0, 1.0, 1.0):
        return image
    image = image * d.brightness
    grey = lambda im: (0.299 * im[0] + 0.587 * im[1] + 0.114 * im[2])[None]  # noqa: E731  (1, H, W) luma
    image = grey(image).mean() + (image - grey(image).mean()) * d.contrast
    image = grey(image) + (image - grey(image)) * d.saturation  # about the contrast-adjusted luma
    return image.clamp(0, 255)


def apply(image: torch.Tensor, d: Draw, *, pose: Pose | None = None, pose_map: torch.Tensor | None = None,
          threshold: float, resolution: int, swap_sides: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, Draw]:
    """The augmented image uint8 (3, H, W), its pose map uint8 (3, H, W) (redrawn from the moved keypoints when
    `pose` is given, their left and right swapped by a flip if `swap_sides`; else `pose_map` warped alike; None
    without either) and the draw applied (a map without keypoints is never flipped)."""
    if d.flip and pose is None and pose_map is not None:
        d = replace(d, flip=False)
    _, h, w = image.shape
    matrix = pixel_matrix(d, w, h)
    out = image.float()
    if d != Draw():
        out = warp(out, matrix) if not np.allclose(matrix, np.eye(3)) else out
        out = jitter_colour(out, d)
    out = out.round().clamp(0, 255).to(torch.uint8)
    if pose is not None:
        drawn = draw_map(move_pose(pose, matrix, d.flip and swap_sides), resolution=resolution, threshold=threshold)
        return out, torch.from_numpy(drawn.copy()).permute(2, 0, 1), d  # (H, W, 3) -> (3, H, W)
    if pose_map is not None:
        moved = warp(pose_map.float(), matrix, fill_border=False) if not np.allclose(matrix, np.eye(3)) else pose_map
        return out, moved.round().clamp(0, 255).to(torch.uint8), d
    return out, None, d
