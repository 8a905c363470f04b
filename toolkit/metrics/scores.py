"""Scores of two feature sets, as small pure functions: FID and KID through torchmetrics (fed precomputed features),
k-NN precision/recall (Kynkäänniemi et al. 2019), and nearest-neighbour memorization with a threshold calibrated
on the reference set itself. Features are (N, D) tensors; `gen` is the generated set, `ref` the real one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch

MIN_IMAGES = 4  # below this no metric here means anything (precision/recall needs k + 1 with k = 3)
# Scores are computed on one process (the main one, in training): torchmetrics must not try to sync with the others.
LOCAL = {"sync_on_compute": False, "distributed_available_fn": lambda: False}
FID_FULL_RANK = 2048  # fewer images per set: FID is biased upward, compare it only at equal counts


class _Given(torch.nn.Module):
    """torchmetrics' 'feature extractor' for features computed beforehand: the identity."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid(gen: torch.Tensor, ref: torch.Tensor) -> float:
    """Fréchet Inception Distance between the Gaussians fitted to both sets (torchmetrics, float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Given(gen.shape[1]), **LOCAL)
    metric.update(ref.double(), real=True)
    metric.update(gen.double(), real=False)
    return float(metric.compute())


def kid_subset(subset_size: int, num_gen: int, num_ref: int) -> int:
    """KID's subset size: at most half the smaller set, so that subsets differ and the std means something."""
    return min(subset_size, max(2, min(num_gen, num_ref) // 2))


def kid(gen: torch.Tensor, ref: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (cubic polynomial kernel): mean and std over `subsets` random subsets of
    `subset_size` images, at most half the smaller set, drawn with `seed` (torchmetrics, float64)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = kid_subset(subset_size, len(gen), len(ref))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchmetrics warns that it keeps all features: we know
        metric = KernelInceptionDistance(feature=_Given(gen.shape[1]), subsets=subsets, subset_size=size, **LOCAL)
    metric.update(ref.double(), real=True)
    metric.update(gen.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws subsets from the global (CPU) generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


CHUNK = 1024  # rows of a distance matrix held at once: memory O(CHUNK x N), whatever the set sizes


def row_chunks(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, float64 distances (<= CHUNK, len(b)) of a's rows from `start` on to every row of b)."""
    b = b.double()
    for start in range(0, len(a), CHUNK):
        yield start, torch.cdist(a[start:start + CHUNK].double(), b)


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point of the same set: (N,)."""
    return torch.cat([d.kthvalue(k + 1, dim=1).values for _, d in row_chunks(features, features)])  # 1st: itself


def precision_recall(gen: torch.Tensor, ref: torch.Tensor, *, k: int = 3) -> tuple[float, float]:
    """Precision: share of generated points inside the real manifold (union of k-NN balls of real points);
    recall: share of real points inside the generated manifold."""
    ref_radii, gen_radii = knn_radii(ref, k), knn_radii(gen, k)
    inside_ref = torch.cat([(d <= ref_radii[None, :]).any(dim=1) for _, d in row_chunks(gen, ref)])
    inside_gen = torch.cat([(d <= gen_radii[None, :]).any(dim=1) for _, d in row_chunks(ref, gen)])
    return float(inside_ref.double().mean()), float(inside_gen.double().mean())


def nearest(queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, the distance to its nearest key and that key's index: (Q,), (Q,)."""
    parts = [d.min(dim=1) for _, d in row_chunks(queries, keys)]
    return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])


def leave_one_out(keys: torch.Tensor) -> torch.Tensor:
    """Each key's distance to its nearest other key, exact duplicates ignored (they say nothing of novelty): (N,)."""
    tolerance = 1e-6 * float(keys.double().std(dim=0).norm())  # "the same point", up to float rounding
    out = []
    for start, d in row_chunks(keys, keys):
        rows = torch.arange(len(d))
        d[rows, rows + start] = float("inf")  # itself (cdist's matmul path gives ~1e-7, not 0)
        d[d <= tolerance] = float("inf")  # exact duplicates
        out.append(d.min(dim=1).values)
    return torch.cat(out)


def copy_threshold(ref: torch.Tensor, quantile: float) -> float:
    """The distance below which a generated image counts as a copy: the `quantile` of the reference's own
    leave-one-out nearest-neighbour distances (a new real image falls below it with probability ~ `quantile`)."""
    loo = leave_one_out(ref)
    loo = loo[torch.isfinite(loo)]
    return float(torch.quantile(loo, quantile)) if len(loo) else 0.0


def copies(gen: torch.Tensor, ref: torch.Tensor, quantile: float) -> dict:
    """Nearest reference of each generated point, the calibrated threshold, and which points fall below it."""
    dist, index = nearest(gen, ref)
    threshold = copy_threshold(ref, quantile)
    flagged = dist <= threshold
    return {"distance": dist, "index": index, "threshold": threshold, "flagged": flagged,
            "copy_rate": float(flagged.double().mean())}
