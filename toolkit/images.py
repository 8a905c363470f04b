"""Reading images safely (any PIL mode to RGB, file lists that cannot escape the dataset root) and the one
resize-and-crop every data path uses. PIL and numpy only: the lowest layer, below poses, figures and data."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.errors import UserError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"}
# Errors PIL raises for a corrupt, truncated or unsupported file: such a file is skipped and counted.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
# The most pixels an image may have: PIL's warning limit (89 M, e.g. 9459 x 9459). PIL itself refuses only twice that.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert grey, 16-bit, palette, CMYK or RGBA images to 8-bit RGB (transparency composited on white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / int / float grey: PIL's convert("L") clips at 255, so rescale to the full 8-bit range.
        arr = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: str | Path) -> Image.Image:
    """`Image.open` (lazy: nothing decoded yet) that refuses a decompression bomb, a small file that decodes to more
    than MAX_PIXELS, before it takes the memory; raises one of DECODE_ERRORS."""
    image = Image.open(path)
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise Image.DecompressionBombError(f"{width}x{height} pixels, more than {MAX_PIXELS}: a decompression bomb?")
    return image


def load_rgb(path: str | Path) -> Image.Image:
    """Decode a file fully into RGB; raises one of DECODE_ERRORS on a corrupt, unsupported or oversized file."""
    with open_image(path) as image:
        image.load()
        return to_rgb(image)


def safe_join(root: Path, relative: str) -> Path:
    """`root / relative`, refusing absolute paths, `..` and symlinks that lead outside the dataset root."""
    root = root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise UserError(f"{relative!r} points outside the dataset root {root}")
    return path


def list_image_files(root: str | Path, *, key: str = "train_data_dir") -> list[Path]:
    """Image files of a dataset folder: those named in metadata.jsonl if present, else all images below it; `key`
    names the option the folder came from, for the error."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{key} not found or not a folder: {root}")
    metadata = root / "metadata.jsonl"
    if metadata.is_file():
        return [safe_join(root, row["file_name"]) for row in read_metadata(metadata, "file_name")]
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    return [p for p in files if p.resolve().is_relative_to(root.resolve())]  # symlinks out of the root are ignored


def one_size(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split files into those of the most common image size and the rest (grids, strays); unreadable ones stay in
    the first list, for the caller to count."""
    from collections import Counter

    sizes = {}
    for path in files:
        try:
            with open_image(path) as image:
                sizes[path] = image.size
        except DECODE_ERRORS:
            sizes[path] = None
    common = Counter(s for s in sizes.values() if s is not None).most_common(1)
    keep = common[0][0] if common else None
    return ([p for p in files if sizes[p] in (keep, None)], [p for p in files if sizes[p] not in (keep, None)])


def read_metadata(metadata: Path, *keys: str) -> list[dict]:
    """The rows of a metadata.jsonl; a row that is not a JSON object with `keys` is an error naming its line."""
    rows = []
    for line_no, line in enumerate(metadata.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            missing = [key for key in keys if not isinstance(row.get(key), str)]
        except (json.JSONDecodeError, AttributeError):
            row, missing = None, list(keys)
        if missing:
            raise UserError(f"{metadata}:{line_no}: expected a JSON object with {' and '.join(map(repr, keys))}")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Crop:
    """Resize by `scale` to `resized` (w, h), then keep the box of `size` (w, h) at (left, top)."""

    scale: float
    resized: tuple[int, int]
    left: int
    top: int
    size: tuple[int, int]


def plan_crop(size: tuple[int, int], resolution: int, *, center: bool = True, square: bool = True,
              rng: random.Random | None = None) -> Crop:
    """The short side of an image of `size` (w, h) to `resolution`, then a square crop: centred, or at a position
    drawn from `rng`; with `square=False` the whole resized image is kept (later crops happen per step)."""
    w, h = size
    scale = resolution / min(w, h)
    resized = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    if not square:
        return Crop(scale, resized, 0, 0, resized)
    extra_w, extra_h = resized[0] - resolution, resized[1] - resolution
    if center:
        left, top = extra_w // 2, extra_h // 2
    else:
        rng = rng or random.Random(0)
        left, top = rng.randint(0, extra_w), rng.randint(0, extra_h)
    return Crop(scale, resized, left, top, (resolution, resolution))


def apply_crop(image: Image.Image, crop: Crop) -> Image.Image:
    """`image` resized (bicubic) and cropped as `crop` says."""
    image = image.resize(crop.resized, Image.Resampling.BICUBIC, reducing_gap=3.0)
    if crop.size == crop.resized:
        return image
    return image.crop((crop.left, crop.top, crop.left + crop.size[0], crop.top + crop.size[1]))
