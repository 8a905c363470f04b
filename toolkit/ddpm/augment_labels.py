"""EDM's non-leaking augmentation for a stock UNet2DModel: what augmentation did to a training image is told to the
network, so that it learns from augmented images without generating augmented ones.

A linear map of the labels (no bias, zero at the start) is added to the UNet's time embedding through a forward hook,
during training only. Validation and sampling give no labels, which is the same as zeros, and a zero label adds
nothing: the saved UNet is therefore a stock UNet2DModel, unchanged in config and weights, that stock pipelines
sample as it is. The map's weights live in checkpoints beside the UNet's, for exact resume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from diffusers import UNet2DModel


class AugmentLabels(torch.nn.Module):
    """The labels' map into `unet`'s time embedding (see the module docstring); `given(labels)` turns it on for the
    forward passes inside the block."""

    def __init__(self, unet: UNet2DModel, num_labels: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(num_labels, unet.time_embedding.linear_2.out_features, bias=False)
        torch.nn.init.zeros_(self.proj.weight)  # a fresh run starts as a model without augmentation conditioning
        self._current: list = [None, None]  # (labels, the module to map them with); a list, not module attributes
        self.hook = unet.time_embedding.register_forward_hook(self._add)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, num_labels) -> (B, time embedding)."""
        return self.proj(labels)

    def _add(self, module: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        labels, forward = self._current
        if labels is None:
            return output
        return output + forward(labels).to(output.dtype)  # (B, time embedding)

    @contextlib.contextmanager
    def given(self, labels: torch.Tensor, forward=None) -> Iterator[None]:
        """Add `labels` (B, num_labels) to the time embedding of the forward passes in the block; `forward` is this
        module as prepared by Accelerate (DDP-wrapped, so its gradients are all-reduced), itself by default."""
        self._current[:] = [labels, forward or self]
        try:
            yield
        finally:
            self._current[:] = [None, None]


class NoLabels:
    """Stands in when augmentation conditioning is off: `given` does nothing."""

    @contextlib.contextmanager
    def given(self, labels: torch.Tensor, forward=None) -> Iterator[None]:
        yield
