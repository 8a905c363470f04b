"""One comparison of a generated set against a reference set: the scores asked for, memorization with the closest
pairs as a PNG, and a short table."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from toolkit.errors import UserError
from toolkit.metrics import scores
from toolkit.metrics.sets import PIXELS, ImageSet

METRICS = ("fid", "kid", "pr", "memorization")


def check_count(found: ImageSet, *, k: int = 3) -> None:
    """A one-line error when a set is too small for the metrics (precision/recall needs more than k images)."""
    need = max(scores.MIN_IMAGES, k + 1)
    if len(found) < need:
        skipped = f" ({len(found.skipped)} unreadable skipped)" if found.skipped else ""
        raise UserError(f"{found.label}: {len(found)} readable image(s){skipped}; these metrics need at least "
                        f"{need} per set (a few hundred for stable scores)")


def check_counts(gen: ImageSet, ref: ImageSet, *, k: int = 3, metrics: tuple[str, ...] = METRICS,
                 kid_subset_size: int = 1000) -> list[str]:
    """Errors for sets too small for the metrics; notes on what only biases the scores or was converted."""
    check_count(gen, k=k)
    check_count(ref, k=k)
    notes = []
    subset = scores.kid_subset(kid_subset_size, len(gen), len(ref))
    if "kid" in metrics and subset < 50:
        notes.append(f"KID from subsets of {subset} images is noisy: its std says how much (a few hundred images "
                     "per set make it stable)")
    if "fid" in metrics and min(len(gen), len(ref)) < scores.FID_FULL_RANK:
        notes.append(f"FID from {len(gen)} vs {len(ref)} images is biased upward below {scores.FID_FULL_RANK} per "
                     "set: compare FIDs only at equal counts (KID is unbiased)")
    for found in (gen, ref):
        if len(found.sizes) > 1:
            notes.append(f"{found.label}: mixed sizes {found.sizes}: each image is cropped to the resolution")
        odd = {m: n for m, n in found.modes.items() if m != "RGB"}
        if odd:
            notes.append(f"{found.label}: {odd} images converted to RGB (grey replicated, alpha composited on white)")
    return notes


def compare(gen: ImageSet, ref: ImageSet, *, metrics: tuple[str, ...] = METRICS, k: int = 3, kid_subsets: int = 100,
            kid_subset_size: int = 1000, copy_quantile: float = 0.01, seed: int = 0) -> dict:
    """The scores of `gen` against `ref` as a JSON-ready dict (memorization under "memorization")."""
    report: dict = {"num_generated": len(gen), "num_reference": len(ref)}
    if "fid" in metrics:
        report["fid"] = scores.fid(gen.features, ref.features)
    if "kid" in metrics:
        mean, std = scores.kid(gen.features, ref.features, subsets=kid_subsets, subset_size=kid_subset_size,
                               seed=seed)
        report |= {"kid": mean, "kid_std": std,
                   "kid_subset_size": scores.kid_subset(kid_subset_size, len(gen), len(ref))}
    if "pr" in metrics:
        report["precision"], report["recall"] = scores.precision_recall(gen.features, ref.features, k=k)
        report["pr_k"] = k
    if "memorization" in metrics:
        report["memorization"] = memorization(gen, ref, copy_quantile)
    return report


def _rms(thumbs: torch.Tensor) -> torch.Tensor:
    """Thumbnails scaled so Euclidean distance is the RMS pixel difference in [0, 1]."""
    return thumbs.double() / 255.0 / math.sqrt(thumbs.shape[1])


def memorization(gen: ImageSet, ref: ImageSet, quantile: float) -> dict:
    """Nearest reference image of each generated one, in Inception space and in pixels; an image is a copy when
    it falls below the calibrated threshold in either space (Inception misses copies with a colour cast, pixels
    miss shifted ones). `closeness` = the smaller distance / threshold ratio of the two: below 1 is a copy."""
    inception = scores.copies(gen.features, ref.features, quantile)
    pixels = scores.copies(_rms(gen.pixels), _rms(ref.pixels), quantile)
    flagged = inception["flagged"] | pixels["flagged"]
    inception_ratio = inception["distance"] / max(inception["threshold"], 1e-12)
    pixel_ratio = pixels["distance"] / max(pixels["threshold"], 1e-12)
    closeness, by_pixels = torch.minimum(inception_ratio, pixel_ratio), pixel_ratio < inception_ratio
    return {
        "copy_rate": float(flagged.double().mean()),
        "copy_rate_inception": inception["copy_rate"],
        "copy_rate_pixels": pixels["copy_rate"],
        "threshold_inception": inception["threshold"],
        "threshold_pixels": pixels["threshold"],
        "quantile": quantile,
        "images": [{"file_name": name, "index": n, "copy": bool(f), "closeness": float(c),
                    "closest_in": "pixels" if p else "inception",
                    "nearest_inception": ref.names[int(i)], "nearest_index_inception": int(i),
                    "distance_inception": float(d), "nearest_pixels": ref.names[int(j)],
                    "nearest_index_pixels": int(j), "distance_pixels": float(e)}
                   for n, (name, f, c, p, i, d, j, e) in enumerate(zip(
                       gen.names, flagged, closeness, by_pixels, inception["index"], inception["distance"],
                       pixels["index"], pixels["distance"], strict=True))],
    }


def closest_pairs(gen: ImageSet, ref: ImageSet, memo: dict, path: Path, *, count: int = 16) -> Path:
    """A PNG of the `count` generated images closest to a reference image (relative to the thresholds): pairs of
    generated | nearest reference image (in the space where it is closer), labelled, copies framed in red."""
    rows = sorted(memo["images"], key=lambda r: r["closeness"])[:count]
    cell, label, cols = PIXELS * 2, 14, 4  # a pair: two thumbnails, upscaled x2, side by side
    sheet = Image.new("RGB", (cols * (2 * cell + 8), math.ceil(len(rows) / cols) * (cell + label + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, row in enumerate(rows):
        x, y = (n % cols) * (2 * cell + 8), (n // cols) * (cell + label + 6)
        space = row["closest_in"]
        for offset, thumb in ((0, gen.pixels[row["index"]]), (cell, ref.pixels[row[f"nearest_index_{space}"]])):
            image = Image.fromarray(thumb.numpy().reshape(PIXELS, PIXELS, 3)).resize((cell, cell), Image.NEAREST)
            sheet.paste(image, (x + offset, y + label))
        text = f"{row['closeness']:.2f} x threshold ({space})"
        draw.text((x + 2, y), text + (" copy" if row["copy"] else ""), fill="red" if row["copy"] else "black")
        if row["copy"]:
            draw.rectangle((x, y + label, x + 2 * cell - 1, y + label + cell - 1), outline="red", width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def table(report: dict, extra: list[tuple[str, str]] = ()) -> str:
    """The headline numbers, then `extra` (label, value) rows, as aligned text."""
    rows = [("images", f"{report['num_generated']} generated vs {report['num_reference']} reference")]
    if "fid" in report:
        rows.append(("FID", f"{report['fid']:.2f}"))
    if "kid" in report:
        rows.append(("KID x 1000", f"{1000 * report['kid']:.2f} ± {1000 * report['kid_std']:.2f} "
                                   f"(subsets of {report['kid_subset_size']})"))
    if "precision" in report:
        rows.append(("precision / recall", f"{report['precision']:.3f} / {report['recall']:.3f} (k={report['pr_k']})"))
    if "memorization" in report:
        memo = report["memorization"]
        rows.append(("copy rate", f"{memo['copy_rate']:.1%} (Inception {memo['copy_rate_inception']:.1%}, pixels "
                                  f"{memo['copy_rate_pixels']:.1%}; threshold: the reference's own "
                                  f"{memo['quantile']:.0%} nearest-neighbour quantile)"))
    rows += extra
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)

