"""Pose fidelity of generated images: the pose detected in each image against the pose it was conditioned on.

A Python API for validation loops (`evaluate_fidelity`) and the folder report (`evaluate_pose_folder`) that
`python -m toolkit.evaluate_poses` and `python -m toolkit.evaluate_images --poses` write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import UserError
from toolkit.images import DECODE_ERRORS
from toolkit.pose.keypoints import Pose
from toolkit.pose.metrics import limb_errors, match_people, oks, oks_ap, pck, present

FACE_SIZE = 256  # BlazeFace (short range) wants faces of about 128 px or more: small samples are upscaled first

# Limb-length ratios a human body shows in a 2D image (generous: foreshortening shortens any limb).
RATIOS = {  # name: ((limb a), (limb b), low, high) for |a| / |b|
    "r_forearm/upper_arm": ((3, 4), (2, 3), 0.4, 1.8), "l_forearm/upper_arm": ((6, 7), (5, 6), 0.4, 1.8),
    "r_shin/thigh": ((9, 10), (8, 9), 0.4, 1.8), "l_shin/thigh": ((12, 13), (11, 12), 0.4, 1.8),
    "upper_arms r/l": ((2, 3), (5, 6), 0.4, 2.5), "thighs r/l": ((8, 9), (11, 12), 0.4, 2.5),
}


def plausible_proportions(body: np.ndarray, min_conf: float = 0.3) -> bool | None:
    """True if every measurable limb-length ratio is in its human range; None if none can be measured."""
    ok = body[:, 2] > min_conf
    verdicts = []
    for (a, b), (c, d), low, high in RATIOS.values():
        if ok[[a, b, c, d]].all():
            denominator = np.linalg.norm(body[c, :2] - body[d, :2])
            if denominator > 1e-6:
                verdicts.append(low <= np.linalg.norm(body[a, :2] - body[b, :2]) / denominator <= high)
    return all(verdicts) if verdicts else None


def rescale_all(pose: Pose, width: int, height: int) -> list[np.ndarray]:
    """Every person's body (18, 3) of `pose`, in the pixels of a `width` x `height` image."""
    scale = np.array([width / pose.width, height / pose.height, 1.0])
    return [person.body * scale for person in pose.people]


def rescale(pose: Pose, width: int, height: int) -> np.ndarray | None:
    """The first person's body of `pose`, in the pixels of a `width` x `height` image (None if nobody)."""
    bodies = rescale_all(pose, width, height)
    return bodies[0] if bodies else None


@dataclass
class ImageScore:
    """One image's scores. With several people in the reference, PCK pools their joints and OKS is their mean (a
    missed person scores 0); limb errors and proportions are over the people found."""

    name: str
    people: int  # people in the reference pose
    found: int  # of them, paired with a detected person
    pck_torso: float | None
    pck_bbox: float | None
    oks: float | None  # None when the reference has nobody
    limb_length_error: float | None
    limb_angle_error: float | None
    plausible: bool | None
    face_score: float | None = None


def _mean(values) -> float | None:
    """Mean of the values that are neither None nor NaN; None when there are none."""
    kept = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _fraction(counts) -> float | None:
    """correct / total of a (correct, total) pair; None when the total is 0."""
    return float(counts[0] / counts[1]) if counts[1] else None


def score_image(name: str, image: np.ndarray, reference: Pose, detector, *, face_checker=None) -> ImageScore:
    """Detect the people in `image` and compare each person of `reference` (rescaled to the image's size) with the
    detected person matched to them (`match_people`: within one torso size), so a group image is scored person by
    person; a reference person with fewer than two visible joints is left out."""
    h, w = image.shape[:2]
    refs = [ref for ref in rescale_all(reference, w, h) if present(ref).sum() >= 2]
    found = detector(image)
    pairs = match_people([p.body for p in found.people], refs)
    matched = [pred for pred, _ in pairs if pred is not None]
    torso, bbox = np.zeros(2), np.zeros(2)  # (correct, total) joints, pooled over the reference people
    length, angle = [], []
    for pred, ref in pairs:
        torso += pck(ref, pred, alpha=0.2, norm="torso")
        bbox += pck(ref, pred, alpha=0.1, norm="bbox")
        if pred is not None:
            errors = limb_errors(ref, pred)
            length += list(errors["length"])
            angle += list(errors["angle"])
    verdicts = [v for v in (plausible_proportions(pred) for pred in matched) if v is not None]
    return ImageScore(
        name=name, people=len(refs), found=len(matched),
        pck_torso=_fraction(torso), pck_bbox=_fraction(bbox),
        oks=float(np.mean([oks(ref, pred) for pred, ref in pairs])) if refs else None,
        limb_length_error=_mean(length), limb_angle_error=_mean(angle),
        plausible=all(verdicts) if verdicts else None,
        face_score=face_checker(image) if face_checker is not None else None)


def summarize(scores: list[ImageScore], face_threshold: float = 0.5) -> dict:
    """Dataset-level fidelity: detection rate, mean PCK, OKS and OKS-AP, limb errors, plausibility, face validity."""
    def mean(values):
        value = _mean(values)
        return None if value is None else round(value, 4)

    faces = [s.face_score for s in scores if s.face_score is not None]
    people = (sum(s.found for s in scores), sum(s.people for s in scores))
    return {
        "images": len(scores),
        "detection_rate": round(people[0] / people[1], 4) if people[1] else None,  # of the reference people
        "pck@0.2_torso": mean([s.pck_torso for s in scores]),
        "pck@0.1_bbox": mean([s.pck_bbox for s in scores]),
        "oks": mean([s.oks for s in scores]),
        "oks_ap": round(oks_ap([s.oks for s in scores if s.oks is not None]), 4) if scores else None,
        "limb_length_error": mean([s.limb_length_error for s in scores]),
        "limb_angle_error_deg": mean([s.limb_angle_error for s in scores]),
        "plausible_proportions_rate": mean([float(s.plausible) for s in scores if s.plausible is not None]),
        "face_validity_rate": round(float(np.mean([f >= face_threshold for f in faces])), 4) if faces else None,
    }


def evaluate_fidelity(images: list[np.ndarray], references: list[Pose], detector, face_checker=None) -> dict:
    """Summary fidelity of generated `images` (RGB uint8) against their conditioning `references`."""
    scores = [score_image(str(i), im, ref, detector, face_checker=face_checker)
              for i, (im, ref) in enumerate(zip(images, references, strict=True))]
    return summarize(scores)


def pairs(images: Path, poses: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, pose JSON) pairs by stem, and the names of images that have no pose."""
    from toolkit.images import list_image_files

    if not poses.is_dir():
        raise UserError(f"poses folder not found: {poses}")
    found, missing = [], []
    for image in list_image_files(images, key="images"):
        pose = poses / f"{image.stem}.json"
        (found.append((image, pose)) if pose.is_file() else missing.append(image.name))
    if not found:
        raise UserError(f"no image in {images} has a pose JSON of the same name in {poses}")
    return found, missing


def evaluate_pose_folder(images: Path, poses: Path, *, face_check: bool = True, tta: str = "auto",
                        calibration: str | None = "default") -> dict:
    """The pose report of a folder of generated images against the OpenPose JSON of the same stems:
    {"summary": ..., "images": [...]} (MediaPipe: needs the [pose] extra)."""
    from tqdm.auto import tqdm

    from toolkit.pose.detect import FaceChecker, MediaPipeDetector, MediaPipeOptions
    from toolkit.pose.keypoints import load_pose
    from toolkit.pose.prepare import load_photo

    found, missing = pairs(images, poses)
    detector = MediaPipeDetector(MediaPipeOptions(tta=tta, calibration=calibration, count_people=False))
    faces = FaceChecker() if face_check else None
    scores, unreadable = [], []
    for image, pose in tqdm(found, desc="scoring poses"):
        try:  # a corrupt image or pose file is skipped and counted (PoseFileError is a ValueError)
            photo, reference = np.asarray(load_photo(image)), load_pose(pose)
        except DECODE_ERRORS as e:
            unreadable.append(f"{image.name} ({type(e).__name__})")
            continue
        scores.append(score_image(image.name, photo, reference, detector, face_checker=faces))
    if not scores:
        raise UserError(f"none of the {len(found)} image/pose pairs in {images} and {poses} could be read "
                        f"(first: {unreadable[0]})")
    return {"summary": summarize(scores) | {"images_without_pose": missing, "unreadable": unreadable},
            "images": [asdict(s) for s in scores]}


def summary_table(summary: dict) -> str:
    """The pose summary as aligned text."""
    width = max(len(k) for k in summary)
    rows = [f"  {k:<{width}}  {v}" for k, v in summary.items() if k not in ("images_without_pose", "unreadable")]
    if summary.get("unreadable"):
        rows.append(f"  {'unreadable':<{width}}  {len(summary['unreadable'])} (first: {summary['unreadable'][0]})")
    return "\n".join(rows)


def face_rate(images: Iterable[np.ndarray], *, min_confidence: float = 0.5) -> float:
    """The share of RGB uint8 images (H, W, 3) in which MediaPipe finds a face, each upscaled to FACE_SIZE first: a
    check that a face model's samples are faces (on the 2-core machine: 99.5 % of 64 px UTKFace crops, none of 100
    noise images, 17 % of smooth colour blobs; docs/time_to_quality.md)."""
    from PIL import Image

    from toolkit.pose.detect import FaceChecker

    checker = FaceChecker(min_confidence)
    try:
        found = [checker(np.asarray(Image.fromarray(im).resize((FACE_SIZE, FACE_SIZE), Image.BICUBIC))) > 0
                 for im in images]
    finally:
        checker.close()
    if not found:
        raise ValueError("face_rate needs at least one image")
    return float(np.mean(found))
