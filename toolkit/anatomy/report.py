"""Anatomy report over a folder of figures-world images: distortion rate with its breakdown, and PCK@0.1 against
the conditioning poses when they are given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from toolkit.anatomy.parse import parse_figure
from toolkit.errors import UserError
from toolkit.images import DECODE_ERRORS, load_rgb, one_size, open_image
from toolkit.pose.fidelity import rescale
from toolkit.pose.keypoints import load_pose
from toolkit.pose.metrics import pck

KINDS = ("missing", "extra", "broken", "wrong_length")
MIN_RESOLUTION = 48  # below this the parser's own false-positive rate is not small (docs/figures.md)


def score_file(image_file: Path, pose_file: Path | None, alpha: float = 0.1) -> dict:
    """One image's verdict: distorted, the four kinds (lists of parts), and PCK (correct, total) if posed."""
    image = np.asarray(load_rgb(image_file))
    parsed = parse_figure(image)
    row = {"file_name": image_file.name, **parsed.to_json()}
    if pose_file is not None:
        ref = rescale(load_pose(pose_file), image.shape[1], image.shape[0])
        correct, total = pck(ref, parsed.keypoints, alpha=alpha, norm="bbox") if ref is not None else (0, 0)
        row["pck"] = correct / total if total else None
        row["pck_counts"] = [correct, total]
    return row


def evaluate_images(image_files: list[Path], poses_dir: Path | None = None, alpha: float = 0.1) -> dict:
    """The report: distortion_rate, per-kind rates, pck (joint-weighted) or None, unreadable files, and per image."""
    rows, unreadable = [], []
    for path in tqdm(image_files, desc="evaluating figures"):
        pose_file = poses_dir / f"{path.stem}.json" if poses_dir is not None else None
        try:
            rows.append(score_file(path, pose_file if pose_file is None or pose_file.is_file() else None, alpha))
        except DECODE_ERRORS:
            unreadable.append(path.name)
    n = max(len(rows), 1)
    counts = [r["pck_counts"] for r in rows if "pck_counts" in r]
    total = sum(t for _, t in counts)
    return {
        "num_images": len(rows),
        "distortion_rate": sum(r["distorted"] for r in rows) / n,
        "breakdown": {kind: sum(bool(r[kind]) for r in rows) / n for kind in KINDS},
        "flags_per_image": sum(sum(len(r[kind]) for kind in KINDS) for r in rows) / n,  # graded, when rates saturate
        "pck": sum(c for c, _ in counts) / total if total else None,
        "pck_alpha": alpha,
        "images_with_pose": len(counts),
        "unreadable": unreadable,
        "images": rows,
    }


def evaluate_folder(images: Path, poses: Path | None = None, alpha: float = 0.1, *, say=print) -> dict:
    """The anatomy report of a folder of figures-world images (one size: others are skipped and listed), with PCK
    against the OpenPose JSON of the same stems in `poses` when given."""

    from toolkit.images import list_image_files

    files = list_image_files(images, key="images")
    if not files:
        raise UserError(f"no images found in {images}")
    if poses is not None and not poses.is_dir():
        raise UserError(f"poses folder not found: {poses}")
    files, others = one_size(files)
    if others:
        say(f"skipped {len(others)} image(s) of another size than the rest (e.g. {others[0].name}: a grid?)")
    try:
        with open_image(files[0]) as first:
            size = first.size
    except DECODE_ERRORS:
        size = None  # counted as unreadable by the evaluation
    if size is not None and min(size) < MIN_RESOLUTION:
        say(f"warning: {files[0].name} is {size[0]}x{size[1]}; the parser is validated from {MIN_RESOLUTION} px "
            "up and flags clean figures below that")
    return evaluate_images(files, poses, alpha) | {"skipped_other_size": [p.name for p in others]}


def is_figures_dataset(folder: Path) -> bool:
    """Whether `folder` was written by `python -m toolkit.figures` (its metadata rows carry distortion labels)."""
    metadata = folder / "metadata.jsonl"
    if not metadata.is_file():
        return False
    first = next((line for line in metadata.read_text().splitlines() if line.strip()), "")
    return '"distortion"' in first and '"labels"' in first


def table(report: dict) -> str:
    """A short plain-text summary of a report."""
    lines = [f"images            {report['num_images']}",
             f"distortion rate   {report['distortion_rate']:.3f}"]
    lines += [f"  {kind:<15} {rate:.3f}" for kind, rate in report["breakdown"].items()]
    lines.append(f"flags per image   {report['flags_per_image']:.2f}")
    pck_text = "n/a (no --poses)" if report["pck"] is None else f"{report['pck']:.3f}"
    lines.append(f"PCK@{report['pck_alpha']:g}          {pck_text}")
    if report["unreadable"]:
        lines.append(f"unreadable        {len(report['unreadable'])} (first: {report['unreadable'][0]})")
    return "\n".join(lines)
