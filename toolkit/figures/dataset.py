"""Write a figures dataset folder in the layout of `prepare_poses`, with distortion and pose labels.

    DIR/images/<stem>.png, DIR/conditioning/<stem>.png, DIR/keypoints/<stem>.json and DIR/metadata.jsonl with
    {"file_name", "conditioning_image_file_name", "text", "distortion", "distortion_detail", "labels",
    "flip_swaps_sides": false} per image (a figure's sides are its segments' hues, which a mirror keeps).

The keypoints and the conditioning map are the intended pose; a planted distortion shows only in the image.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from toolkit.figures.render import Figure, render_figure
from toolkit.pose.keypoints import Person, Pose, save_pose


def caption(figure: Figure) -> str:
    """A short caption from the figure's labels, e.g. "a person sitting, arms down, legs bent"."""
    labels = figure.labels
    return f"a person {labels['posture']}, arms {labels['arms']}, legs {labels['legs']}"


def write_dataset(output_dir: str | Path, num_images: int, resolution: int, *, seed: int = 0,
                  distortion: str = "none") -> Path:
    """Render `num_images` figures (image i from seed (seed, i)) into a dataset folder; returns its path."""
    out = Path(output_dir)
    for sub in ("images", "conditioning", "keypoints"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(num_images), desc="rendering figures"):
        figure = render_figure(seed * 1_000_003 + i, resolution, distortion=distortion)
        stem = f"{i:06d}"
        figure.image.save(out / "images" / f"{stem}.png")
        figure.conditioning().save(out / "conditioning" / f"{stem}.png")
        save_pose(Pose(resolution, resolution, [Person(figure.keypoints)]), out / "keypoints" / f"{stem}.json")
        rows.append({"file_name": f"images/{stem}.png", "conditioning_image_file_name": f"conditioning/{stem}.png",
                     "text": caption(figure), "distortion": figure.distortion["kind"],
                     "distortion_detail": figure.distortion, "labels": figure.labels, "flip_swaps_sides": False})
    tmp = out / "metadata.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.replace(out / "metadata.jsonl")  # written last and atomically: a folder with metadata is complete
    return out
