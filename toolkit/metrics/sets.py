"""Image sets as the metrics see them: Inception features and small pixel thumbnails of every readable image,
brought to one resolution first, with a disk cache keyed by the set's content and that resolution.

Resolution rule: both sets of a comparison are first brought to one resolution R the way the trainers crop their
data (short side to R, centre crop; `toolkit.images.plan_crop`), so samples are judged against the training images
as the model saw them; then the Inception resize rule (`toolkit.metrics.inception`) takes them to 299 x 299.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from toolkit.images import DECODE_ERRORS, apply_crop, open_image, plan_crop, to_rgb
from toolkit.metrics.inception import RULE, WEIGHTS_SHA1, InceptionFeatures

CACHE_FORMAT = 1  # bump when what a cache file holds changes
PIXELS = 64  # side of the thumbnails compared in pixel space (memorization)


def default_cache() -> Path:
    """Where reference features are cached: $XDG_CACHE_HOME (or ~/.cache)/anatomy-toolkit/metrics."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anatomy-toolkit" / "metrics"


@dataclass
class ImageSet:
    """Features (N, 2048) float32 and thumbnails (N, 64*64*3) uint8 of a set's readable images, in file order."""

    label: str
    names: list[str]
    features: torch.Tensor
    pixels: torch.Tensor
    skipped: list[str] = field(default_factory=list)  # unreadable files
    sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count, before resizing
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> count (grey and RGBA are converted)
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.names)


def at_resolution(image: Image.Image, resolution: int) -> np.ndarray:
    """Any PIL image -> (R, R, 3) uint8 RGB: short side to R, centre crop (as the trainers crop)."""
    image = to_rgb(image)
    return np.asarray(apply_crop(image, plan_crop(image.size, resolution)))


def thumbnail(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (64*64*3,) uint8, for pixel-space nearest neighbours."""
    return np.asarray(Image.fromarray(image).resize((PIXELS, PIXELS), Image.Resampling.BICUBIC)).reshape(-1)


def _key(*parts: bytes) -> str:
    """The cache key: the resize rules, the weights and the content."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{RULE}|{WEIGHTS_SHA1}|{PIXELS}".encode())
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:40]


def relative_name(path: Path, root: Path) -> str:
    """The file's name relative to the set's folder (POSIX), unique across subfolders."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # not below the root (cannot happen for listed files); keep it recognisable
        return path.as_posix()


def folder_key(root: Path, files: list[Path], resolution: int) -> str:
    """A key over every file's relative name and bytes, and the resolution: any change of content changes it."""
    parts = [str(resolution).encode()]
    for path in files:
        try:
            content = hashlib.sha256(path.read_bytes()).digest()
        except OSError:  # missing or unreadable: decoding will skip and count it
            content = b"unreadable"
        parts += [relative_name(path, root).encode(), content]
    return _key(*parts)


def _decode(root: Path, files: list[Path], resolution: int, found: ImageSet) -> Iterator[np.ndarray]:
    """Each readable file at the resolution; counts sizes, modes and unreadable files into `found`."""
    sizes, modes = Counter(), Counter()
    for path in files:
        try:
            with open_image(path) as image:
                image.load()
                sizes[f"{image.size[0]}x{image.size[1]}"] += 1
                modes[image.mode] += 1
                array = at_resolution(image, resolution)
        except DECODE_ERRORS:
            found.skipped.append(relative_name(path, root))
            continue
        found.names.append(relative_name(path, root))
        yield array
    found.sizes, found.modes = dict(sizes), dict(modes)


def embed(label: str, images: Iterable[np.ndarray], extractor: InceptionFeatures, *, total: int | None = None,
          found: ImageSet | None = None) -> ImageSet:
    """Features and thumbnails of (H, W, 3) uint8 images, with a progress bar."""
    found = found if found is not None else ImageSet(label, [], torch.zeros(0), torch.zeros(0))
    thumbs: list[np.ndarray] = []

    def keep_thumbnail(images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for image in images:
            thumbs.append(thumbnail(image))
            yield image

    with tqdm(total=total, desc=f"Inception features: {label}", unit="img", leave=False) as bar:
        found.features = extractor(keep_thumbnail(images), progress=bar.update)
    found.pixels = torch.from_numpy(np.stack(thumbs)) if thumbs else torch.zeros(0, PIXELS * PIXELS * 3,
                                                                                   dtype=torch.uint8)
    if not found.names:
        found.names = [f"{i:06d}" for i in range(len(thumbs))]
    return found


def load_folder(root: Path, files: list[Path], resolution: int, extractor: InceptionFeatures, *,
                cache_dir: Path | None) -> ImageSet:
    """The set of `files` under `root` at `resolution`, from the cache when its content was seen before."""
    def compute() -> ImageSet:
        found = ImageSet(str(root), [], torch.zeros(0), torch.zeros(0))
        return embed(str(root), _decode(root, files, resolution, found), extractor, total=len(files), found=found)

    return _cached(cache_dir, lambda: folder_key(root, files, resolution), str(root), compute)


def load_arrays(label: str, images: list[np.ndarray], extractor: InceptionFeatures, *,
                cache_dir: Path | None) -> ImageSet:
    """The set of decoded (R, R, 3) uint8 images (a trainer's training images), cached by their bytes."""
    def key() -> str:
        return _key(*(part for im in images for part in (str(im.shape).encode(), im.tobytes())))

    return _cached(cache_dir, key, label, lambda: embed(label, images, extractor, total=len(images)))


def _cached(cache_dir: Path | None, key: Callable[[], str], label: str, compute: Callable[[], ImageSet]) -> ImageSet:
    """The cached set under `key()`, or `compute()` written to the cache; no cache: always compute."""
    if cache_dir is None:
        return compute()
    name = key()
    found = read_cache(cache_dir, name, label)
    if found is None:
        found = compute()
        write_cache(cache_dir, name, found)
    return found


def read_cache(cache_dir: Path, key: str, label: str) -> ImageSet | None:
    """A cached set, or None; a damaged cache file counts as absent."""
    from safetensors import SafetensorError, safe_open

    path = cache_dir / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["set"])
            return ImageSet(label, meta["names"], f.get_tensor("features"), f.get_tensor("pixels"), meta["skipped"],
                            meta["sizes"], meta["modes"], from_cache=True)
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


def write_cache(cache_dir: Path, key: str, found: ImageSet) -> None:
    """Write atomically (a temporary file renamed), so a stopped run never leaves a half-written cache; the cache
    only saves time, so a folder that cannot be written is a warning, not an error."""
    from safetensors.torch import save_file

    meta = {k: getattr(found, k) for k in ("names", "skipped", "sizes", "modes")}
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_file({"features": found.features.contiguous(), "pixels": found.pixels.contiguous()}, str(tmp),
                  metadata={"set": json.dumps(meta)})
        os.replace(tmp, cache_dir / f"{key}.safetensors")
    except OSError as e:
        print(f"warning: reference features not cached ({e}); pass --cache_dir or --no-cache")
