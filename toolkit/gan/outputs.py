"""What a GAN run writes and reads: both networks and the generator's EMA in checkpoints (safetensors folders), the
saved generator, sampling from it, the collapse watch's diversity, the summary and the model card."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.training_utils import EMAModel

from toolkit.config import to_dict
from toolkit.gan.config import TrainGANConfig
from toolkit.gan.models import Discriminator, Generator
from toolkit.hub import TOOLKIT, CardInfo
from toolkit.training.report import RunSummary
from toolkit.training.runs import ema_weights

COLLAPSED_BELOW = 0.25  # the run report calls a run collapsed when its last diversity is under this (real = 1)
STANDING_LATENTS = 256  # latents whose batch statistics become a sampled generator's batch-norm statistics


@dataclass
class GANSummary(RunSummary):
    """The run's figures, with the diversity of its validation samples (relative to the training images')."""

    diversity: list = field(default_factory=list)  # (step, diversity) at each validation

    @property
    def collapsed(self) -> bool | None:
        """Whether the last validation's samples had under COLLAPSED_BELOW of the training images' diversity."""
        return self.diversity[-1][1] < COLLAPSED_BELOW if self.diversity else None

    def output_rows(self) -> list[tuple[str, str]]:
        """The generator, its samples and the collapse verdict."""
        out = Path(self.output_dir) / "generator"
        rows = [("generator", f"{out} (python -m toolkit.sample gan --generator {out})"), ("samples", self.samples)]
        if self.diversity:
            step, last = self.diversity[-1]
            best = max(v for _, v in self.diversity)
            verdict = "collapsed" if self.collapsed else "not collapsed"
            rows.append(("diversity", f"{last:.3f} of the training images' at step {step} (best {best:.3f}): "
                                      f"{verdict}"))
        return rows


def diversity(images: np.ndarray) -> float:
    """Mean pairwise distance of images (N, H, W, 3) uint8 at 16 x 16: near 0 when a generator has collapsed."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)
    x = torch.nn.functional.adaptive_avg_pool2d(x, 16).flatten(1)  # (N, 768): layout and colour, not noise
    n = x.shape[0]
    if n < 2:
        return 0.0
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))


@torch.no_grad()
def generate(gen: Generator, count: int, *, seed: int, maps: torch.Tensor | None = None, batch_size: int = 64,
             device: torch.device | str = "cpu") -> np.ndarray:
    """`count` images (N, R, R, 3) uint8 from latents seeded by `seed` (and `maps` (N, 3, R, R) in [-1, 1])."""
    was_training = gen.training
    gen.eval()
    z = torch.randn(count, gen.config.z_dim, generator=torch.Generator().manual_seed(seed))
    out = []
    try:  # training mode comes back also when sampling fails (out of memory during a validation)
        for start in range(0, count, batch_size):
            chunk = maps[start:start + batch_size].to(device) if maps is not None else None
            images = gen(z[start:start + batch_size].to(device), chunk).float()  # (B, 3, R, R) in [-1, 1]
            out.append(((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    finally:
        gen.train(was_training)
    return np.concatenate(out)


@torch.no_grad()
def standing_stats(gen: Generator, *, maps: torch.Tensor | None = None, count: int = STANDING_LATENTS,
                   batch_size: int = 64, seed: int = 0) -> None:
    """Recompute the generator's batch-norm statistics for its current weights ("standing statistics", as in BigGAN):
    the average over `count` seeded latents (with `maps` (M, 3, R, R), cycled, for a pose generator). An EMA's
    weights come without statistics of their own, and the training ones belong to other weights: sampled with
    either, the averaged generator gives washed-out or grey images."""
    norms = [m for m in gen.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    device, was_training = next(gen.parameters()).device, gen.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    gen.train()
    z = torch.randn(count, gen.config.z_dim, generator=torch.Generator().manual_seed(seed))
    try:
        for start in range(0, count, batch_size):
            chunk = z[start:start + batch_size]
            pose = maps[torch.arange(start, start + len(chunk)) % len(maps)].to(device) if maps is not None else None
            gen(chunk.to(device), pose)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        gen.train(was_training)


@contextmanager
def averaged(gen: Generator, ema: EMAModel | None, *, maps: torch.Tensor | None = None) -> Iterator[Generator]:
    """`gen` as it is sampled and saved: its EMA weights (when kept) with standing batch-norm statistics. Its own
    weights and statistics are back afterwards, so training (and exact resume) is unaffected."""
    buffers = {name: b.clone() for name, b in gen.named_buffers()}
    momenta = {m: m.momentum for m in gen.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    with ema_weights(ema, gen):
        try:
            standing_stats(gen, maps=maps)
            yield gen
        finally:
            for name, b in gen.named_buffers():
                b.copy_(buffers[name])
            for m, momentum in momenta.items():
                m.momentum = momentum


def save_networks(gen: Generator, disc: Discriminator, ema: EMAModel | None, folder: Path, *,
                  maps: torch.Tensor | None = None) -> None:
    """A checkpoint's model part: `generator/`, `discriminator/` and, with an EMA, `generator_ema/`: what
    `EMAModel.save_pretrained` writes (its state in config.json, read back by `EMAModel.from_pretrained`), plus the
    standing batch-norm statistics it leaves out, so the folder also samples as the run's generator would."""
    gen.save_pretrained(folder / "generator")
    disc.save_pretrained(folder / "discriminator")
    if ema is not None:
        with averaged(gen, ema, maps=maps):
            sampled = Generator.from_config(gen.config)
            sampled.load_state_dict(gen.state_dict())  # EMA weights and their statistics
        state = ema.state_dict()
        state.pop("shadow_params", None)
        sampled.register_to_config(**state)
        sampled.save_pretrained(folder / "generator_ema")


def load_networks(gen: Generator, disc: Discriminator, ema: EMAModel | None, folder: Path) -> None:
    """Load what `save_networks` wrote, exactly (the EMA's step count included)."""
    for module, cls, name in ((gen, Generator, "generator"), (disc, Discriminator, "discriminator")):
        module.load_state_dict(cls.from_pretrained(folder / name).state_dict())
    if ema is not None:
        ema.load_state_dict(EMAModel.from_pretrained(folder / "generator_ema", Generator, foreach=True).state_dict())


def save_generator(gen: Generator, ema: EMAModel | None, out: Path, *, maps: torch.Tensor | None = None) -> None:
    """The generator as sampled (`averaged`) at `out`, written beside and moved in place, so `out` is never half
    written."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with averaged(gen, ema, maps=maps):
        gen.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


USAGE = ["# pip install anatomy-toolkit  (the Generator class lives there)",
         "from toolkit.gan.models import Generator", "from toolkit.gan.outputs import generate", "",
         'gen = Generator.from_pretrained("{repo_id}", subfolder="generator")',
         "images = generate(gen, 16, seed=0)  # (16, R, R, 3) uint8; pose models also take maps=(16, 3, R, R)"]


def card_info(cfg: TrainGANConfig, summary: GANSummary) -> CardInfo:
    """What the model card of a GAN run says: data, figures, sample grid and the resolved config."""
    posed = cfg.conditioning == "pose"
    figures = {"steps": summary.start_step + summary.steps_done, "resolution": f"{cfg.resolution} px",
               "throughput": f"{summary.images_per_second:.1f} img/s", "loss": cfg.gan_loss,
               "final discriminator loss (smoothed)": f"{summary.smoothed_loss:.4f}",
               "mixed precision": summary.mixed_precision, "skipped files": len(summary.skipped_files)}
    if summary.diversity:
        figures["sample diversity (training images = 1)"] = f"{summary.diversity[-1][1]:.3f}"
    kind = "A pose-conditioned (OpenPose map through an encoder)" if posed else "An unconditional"
    description = (f"{kind} {cfg.model} GAN generator trained from scratch on {summary.data} with {TOOLKIT} "
                   "`train_gan.py`.")
    datasets = [cfg.dataset_name] if cfg.dataset_name and not Path(cfg.dataset_name).exists() else None
    return CardInfo(repo_id=cfg.hub_model_id, pipeline_tag="image-to-image" if posed else
                    "unconditional-image-generation", license=cfg.hub_license, description=description,
                    tags=["gan", cfg.model, *(["openpose", "pose-conditioned"] if posed else [])], datasets=datasets,
                    grid="samples/final.png", loss_plot="loss.png", config=to_dict(cfg), figures=figures,
                    usage=USAGE)
