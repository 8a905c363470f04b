"""The figures testbed's own numbers: render speed, and the parser's accuracy on labelled renders.

    python benchmarks/bench_figures.py --num_images 300

For each resolution: the false-positive rate on clean renders, recall per planted distortion, and PCK@0.1 (bbox)
of the parsed keypoints against ground truth. Render speed is single-process at 64 px. Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

KINDS = {"extra_limb": "extra", "missing_limb": "missing", "broken_limb": "broken", "stretched_limb": "wrong_length"}


def render_speed(resolution: int, count: int) -> float:
    """Figures per second, image and pose map, on one core."""
    from toolkit.figures import render_figure

    start = time.perf_counter()
    for seed in range(count):
        render_figure(seed, resolution).conditioning()
    return count / (time.perf_counter() - start)


def parser_accuracy(resolution: int, count: int, seed: int) -> dict:
    """False positives on clean renders, recall of each planted kind (any flag, and the matching flag), PCK."""
    from toolkit.anatomy.parse import parse_figure
    from toolkit.figures import render_figure
    from toolkit.pose.metrics import pck

    out, correct, total = {}, 0, 0
    for kind in ("none", *KINDS):
        flagged, matched = 0, 0
        for i in range(count):
            fig = render_figure(seed + i, resolution, distortion=kind)
            parsed = parse_figure(np.asarray(fig.image))
            flagged += parsed.distorted
            matched += kind != "none" and bool(getattr(parsed, KINDS[kind]))
            if kind == "none":
                c, t = pck(fig.keypoints, parsed.keypoints, alpha=0.1, norm="bbox")
                correct, total = correct + c, total + t
        if kind == "none":
            out["false_positive_rate"] = flagged / count
        else:
            out[f"recall_{kind}"] = flagged / count
            out[f"recall_{kind}_as_{KINDS[kind]}"] = matched / count
    out["pck@0.1"] = correct / total
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=300, help="renders per kind and resolution")
    parser.add_argument("--resolutions", default="32,48,64,128")
    parser.add_argument("--seed", type=int, default=50_000, help="first render seed (not the tests' seeds)")
    args = parser.parse_args()
    results = {"render_img_per_s_64px": round(render_speed(64, 1000), 1), "num_images": args.num_images}
    for r in map(int, args.resolutions.split(",")):
        results[f"{r}px"] = parser_accuracy(r, args.num_images, args.seed)
    print(json.dumps(results, indent=1))
    print(f"render speed at 64 px: {results['render_img_per_s_64px']} img/s (image + pose map, one core)")
    print("| resolution | false positives | " + " | ".join(f"recall {k}" for k in KINDS) + " | PCK@0.1 |")
    print("|---|---|" + "---|" * len(KINDS) + "---|")
    for r in map(int, args.resolutions.split(",")):
        row = results[f"{r}px"]
        recalls = " | ".join(f"{row[f'recall_{k}']:.3f}" for k in KINDS)
        print(f"| {r} px | {row['false_positive_rate']:.3f} | {recalls} | {row['pck@0.1']:.3f} |")


if __name__ == "__main__":
    main()
