"""Pose fidelity between a reference pose (the conditioning, or ground truth) and a detected one, body-18.

All functions take (18, 3) arrays (x, y, confidence in pixels); a point counts as present when its confidence is
above `min_conf`. Only joints present in the reference are scored; a joint missing from the prediction is a miss.
"""

from __future__ import annotations

import numpy as np

from toolkit.pose.keypoints import LIMBS_18

# COCO keypoint sigmas mapped to body-18 (the neck, absent from COCO, takes the shoulders' value).
COCO_SIGMAS_18 = np.array([0.026, 0.079, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087, 0.089, 0.107,
                           0.087, 0.089, 0.025, 0.025, 0.035, 0.035])
R_SHO, L_SHO, R_HIP, L_HIP = 2, 5, 8, 11


def present(points: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """Boolean mask (18,) of the points whose confidence is above `min_conf`."""
    return points[:, 2] > min_conf


def torso_size(ref: np.ndarray, min_conf: float = 0.0) -> float | None:
    """Mean length of the torso diagonals (right shoulder-left hip, left shoulder-right hip); None if neither."""
    ok = present(ref, min_conf)
    sizes = [np.linalg.norm(ref[a, :2] - ref[b, :2]) for a, b in ((R_SHO, L_HIP), (L_SHO, R_HIP)) if ok[a] and ok[b]]
    return float(np.mean(sizes)) if sizes else None


def bbox_size(ref: np.ndarray, min_conf: float = 0.0) -> float | None:
    """The larger side of the bounding box of the present reference points; None if fewer than two."""
    pts = ref[present(ref, min_conf), :2]
    return float((pts.max(0) - pts.min(0)).max()) if len(pts) >= 2 else None


def pck(ref: np.ndarray, pred: np.ndarray | None, *, alpha: float = 0.2, norm: str = "torso",
        min_conf: float = 0.0) -> tuple[int, int]:
    """(correct, total) joints: a predicted joint is correct within alpha x torso (or bbox) size of the reference."""
    ok = present(ref, min_conf)
    size = torso_size(ref, min_conf) if norm == "torso" else bbox_size(ref, min_conf)
    if size is None or not ok.any():
        return 0, 0
    if pred is None:
        return 0, int(ok.sum())
    dist = np.linalg.norm(pred[:, :2] - ref[:, :2], axis=1)
    hit = ok & present(pred, min_conf) & (dist <= alpha * size)
    return int(hit.sum()), int(ok.sum())


def oks(ref: np.ndarray, pred: np.ndarray | None, area: float | None = None, min_conf: float = 0.0) -> float:
    """COCO object keypoint similarity; `area` defaults to the reference's bounding-box area (COCO uses the mask)."""
    ok = present(ref, min_conf)
    if pred is None or not ok.any():
        return 0.0
    if area is None:
        pts = ref[ok, :2]
        area = float(np.prod(np.maximum(pts.max(0) - pts.min(0), 1.0)))
    d2 = ((pred[:, :2] - ref[:, :2]) ** 2).sum(1)
    sim = np.exp(-d2 / (2 * area * (2 * COCO_SIGMAS_18) ** 2 + np.finfo(float).eps))
    sim[~present(pred, min_conf)] = 0.0
    return float(sim[ok].mean())


def oks_ap(scores: list[float], thresholds: np.ndarray | None = None) -> float:
    """AP over OKS thresholds 0.50:0.05:0.95 for one person per image: the mean fraction of images above each."""
    thresholds = np.arange(0.5, 0.96, 0.05) if thresholds is None else thresholds
    values = np.asarray(scores, dtype=float)
    return float(np.mean([(values >= t).mean() for t in thresholds])) if len(values) else 0.0


def limb_errors(ref: np.ndarray, pred: np.ndarray, min_conf: float = 0.0) -> dict[str, np.ndarray]:
    """Per limb (17,): relative length error |l_pred / l_ref - 1| and absolute angle error in degrees (NaN if absent)."""
    length, angle = np.full(len(LIMBS_18), np.nan), np.full(len(LIMBS_18), np.nan)
    ok_r, ok_p = present(ref, min_conf), present(pred, min_conf)
    for i, (a, b) in enumerate(LIMBS_18):
        if not (ok_r[a] and ok_r[b] and ok_p[a] and ok_p[b]):
            continue
        vr, vp = ref[b, :2] - ref[a, :2], pred[b, :2] - pred[a, :2]
        lr = np.linalg.norm(vr)
        if lr < 1e-6:
            continue
        length[i] = abs(np.linalg.norm(vp) / lr - 1.0)
        diff = np.degrees(np.arctan2(vp[1], vp[0]) - np.arctan2(vr[1], vr[0]))
        angle[i] = abs((diff + 180.0) % 360.0 - 180.0)
    return {"length": length, "angle": angle}


def match_people(preds: list[np.ndarray], refs: list[np.ndarray], *,
                 max_distance: float = 1.0) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """Pair each reference body with at most one prediction, greedily by the median distance of their shared
    joints (at least 3, or all of a reference with fewer) in reference torso sizes (the box's larger side when no
    torso diagonal is visible); pairs beyond `max_distance` are not made and unmatched references get None."""
    candidates = []
    for i, pred in enumerate(preds):
        for j, ref in enumerate(refs):
            size, shared = torso_size(ref) or bbox_size(ref), present(pred) & present(ref)
            if size and shared.sum() >= min(3, present(ref).sum()):
                distance = np.median(np.linalg.norm(pred[shared, :2] - ref[shared, :2], axis=1)) / size
                candidates.append((float(distance), i, j))
    taken_pred, matched = set(), {}
    for distance, i, j in sorted(candidates):
        if distance <= max_distance and i not in taken_pred and j not in matched:
            taken_pred.add(i)
            matched[j] = preds[i]
    return [(matched.get(j), ref) for j, ref in enumerate(refs)]
