"""The metrics' own numbers: Inception feature speed, real-vs-real scores, monotonicity under blur and noise, and
agreement with an independent (numpy/scipy) FID on the same features.

    python benchmarks/bench_metrics.py --data ../shared/data --resolution 64 --ladder_images 1000

Sets: two halves of ORL (alternate files: every person in both halves) and of the colour faces in utkface_5k,
cropped to --resolution as the trainers crop. Ladders: the first half's first --ladder_images images blurred
(Gaussian sigma in px at that resolution) or noised (Gaussian std in grey levels), scored against the second half.
Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

BLUR = (0.5, 1.0, 2.0)
NOISE = (8.0, 16.0, 32.0)


def load(files: list[Path], resolution: int) -> list[np.ndarray]:
    """Each file at the resolution, as the metrics read it."""
    from toolkit.metrics.sets import at_resolution

    out = []
    for path in files:
        with Image.open(path) as image:
            out.append(at_resolution(image, resolution))
    return out


def speed(extractor, count: int = 256) -> float:
    """Feature extraction, resize rule included, in img/s (after two warm-up batches)."""
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(count)]
    extractor(images[:64])  # warm-up: oneDNN prepares its kernels on the first batches
    start = time.perf_counter()
    extractor(images)
    return count / (time.perf_counter() - start)


def scipy_fid(a, b) -> float:
    """An independent Fréchet distance: numpy means and covariances, scipy's matrix square root."""
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def degrade(images: list[np.ndarray], *, blur: float = 0.0, noise: float = 0.0, seed: int = 0) -> list[np.ndarray]:
    """Blurred or noised copies."""
    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        if blur:
            image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(blur)))
        if noise:
            image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
        out.append(image)
    return out


def halves(name: str, files: list[Path], resolution: int, ladder: int, extractor) -> dict:
    """Real vs real, the ladders, and the scipy check, for one dataset."""
    from toolkit.metrics import scores
    from toolkit.metrics.report import compare, memorization
    from toolkit.metrics.sets import embed

    a_img, b_img = load(files[0::2], resolution), load(files[1::2], resolution)
    a, b = embed(f"{name} A", a_img, extractor), embed(f"{name} B", b_img, extractor)
    real = compare(a, b, metrics=("fid", "kid", "pr"))
    memo = {k: v for k, v in memorization(a, b, 0.01).items() if k.startswith("copy_rate")}
    row = {"dataset": name, "images": [len(a), len(b)], "real_vs_real": real | memo,
           "scipy_fid": scipy_fid(a.features, b.features)}
    row["fid_relative_difference"] = abs(row["scipy_fid"] - real["fid"]) / abs(row["scipy_fid"])
    sub = a_img[:ladder]
    base = embed(f"{name} clean", sub, extractor)
    ladders = {"blur": [(0.0, base)], "noise": [(0.0, base)]}
    for sigma in BLUR:
        ladders["blur"].append((sigma, embed(f"{name} blur {sigma}", degrade(sub, blur=sigma), extractor)))
    for std in NOISE:
        ladders["noise"].append((std, embed(f"{name} noise {std}", degrade(sub, noise=std), extractor)))
    for kind, steps in ladders.items():
        points = []
        for level, found in steps:
            kid_mean, kid_std = scores.kid(found.features, b.features)
            points.append({"level": level, "fid": scores.fid(found.features, b.features), "kid": kid_mean,
                           "kid_std": kid_std})
        row[kind] = points
        pairs = zip(points, points[1:], strict=False)
        row[f"{kind}_monotone"] = all(p["fid"] < q["fid"] and p["kid"] < q["kid"] for p, q in pairs)
    return row


def table(result: dict) -> str:
    lines = [f"feature extraction: {result['img_per_s']:.1f} img/s ({result['threads']} threads)", "",
             "| data | images | FID | KID x1000 | precision | recall | copy rate (Inception, pixels) | "
             "scipy FID rel. diff |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["datasets"]:
        r = row["real_vs_real"]
        lines.append(f"| {row['dataset']} halves | {row['images'][0]} + {row['images'][1]} | {r['fid']:.2f} | "
                     f"{1000 * r['kid']:.2f} ± {1000 * r['kid_std']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['copy_rate']:.1%} ({r['copy_rate_inception']:.1%}, {r['copy_rate_pixels']:.1%}) | "
                     f"{row['fid_relative_difference']:.1e} |")
    lines += ["", "| data | degradation | levels | FID | KID x1000 | monotone |", "|---|---|---|---|---|---|"]
    for row in result["datasets"]:
        for kind, unit in (("blur", "sigma px"), ("noise", "std")):
            points = row[kind]
            levels = ", ".join(f"{p['level']:g}" for p in points)
            fids = ", ".join(f"{p['fid']:.1f}" for p in points)
            kids = ", ".join(f"{1000 * p['kid']:.1f}" for p in points)
            lines.append(f"| {row['dataset']} | {kind} ({unit}) | {levels} | {fids} | {kids} | "
                         f"{row[kind + '_monotone']} |")
    return "\n".join(lines)


def main() -> None:
    import torch

    from toolkit.images import list_image_files
    from toolkit.metrics.inception import InceptionFeatures

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--ladder_images", type=int, default=1000)
    parser.add_argument("--datasets", default="orl_faces,utkface_5k")
    args = parser.parse_args()
    extractor = InceptionFeatures()
    result = {"threads": torch.get_num_threads(), "img_per_s": speed(extractor), "resolution": args.resolution,
              "datasets": []}
    for name in args.datasets.split(","):
        files = list_image_files(Path(args.data) / name)
        result["datasets"].append(halves(name, files, args.resolution, args.ladder_images, extractor))
    print(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
