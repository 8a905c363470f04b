"""Reading images safely: any PIL mode to RGB, and file lists that cannot escape the dataset root (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.errors import UserError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".pbm"}
# Errors PIL raises for a corrupt, truncated or unsupported file: such a file is skipped and counted.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


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


def load_rgb(path: str | Path) -> Image.Image:
    """Decode a file fully into RGB; raises one of DECODE_ERRORS on a corrupt or unsupported file."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def safe_join(root: Path, relative: str) -> Path:
    """`root / relative`, refusing absolute paths, `..` and symlinks that lead outside the dataset root."""
    root = root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise UserError(f"{relative!r} points outside the dataset root {root}")
    return path


def list_image_files(root: str | Path) -> list[Path]:
    """Image files of a dataset folder: those named in metadata.jsonl if present, else all images below it."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"train_data_dir not found or not a folder: {root}")
    metadata = root / "metadata.jsonl"
    if metadata.is_file():
        return [safe_join(root, name) for name in _metadata_file_names(metadata)]
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    return [p for p in files if p.resolve().is_relative_to(root.resolve())]  # symlinks out of the root are ignored


def _metadata_file_names(metadata: Path, key: str = "file_name") -> list[str]:
    names = []
    for line_no, line in enumerate(metadata.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            names.append(json.loads(line)[key])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{metadata}:{line_no}: expected a JSON object with a {key!r} key") from None
    return names


def list_conditioning_files(root: str | Path) -> list[Path]:
    """The pose maps of a prepare_poses / toolkit.figures folder, in list_image_files order (metadata.jsonl's
    conditioning_image_file_name)."""
    metadata = Path(root) / "metadata.jsonl"
    if not metadata.is_file():
        raise UserError(f"pose conditioning needs a dataset folder with metadata.jsonl (as written by "
                        f"toolkit.prepare_poses or toolkit.figures); none in {root}")
    return [safe_join(Path(root), name) for name in _metadata_file_names(metadata, "conditioning_image_file_name")]
