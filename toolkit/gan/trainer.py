"""The GAN trainer: a generator and a discriminator from scratch (optionally pose-conditioned), two phases of the
shared loop (the discriminator every step, the generator every `n_critic`), EMA of the generator, a collapse watch,
and the saved generator. Everything else is `toolkit.training.loop`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from toolkit.data.dataset import (
    MicroBatch,
    centre,
    load_images,
    resolve_conditioning,
    step_batches,
    validation_maps,
)
from toolkit.gan.augment import diff_augment
from toolkit.gan.config import TrainGANConfig
from toolkit.gan.losses import d_loss, g_loss, gradient_penalty, r1_penalty
from toolkit.gan.models import Discriminator, Generator
from toolkit.gan.outputs import (
    STANDING_LATENTS,
    GANSummary,
    averaged,
    card_info,
    diversity,
    generate,
    load_networks,
    save_generator,
    save_networks,
)
from toolkit.hub import CardInfo
from toolkit.sampling import make_grid
from toolkit.training.evaluation import EVAL_SEED_OFFSET, spread
from toolkit.training.loop import Phase, StepBatch, Trainer
from toolkit.training.report import RunSummary, log_images
from toolkit.training.runs import make_ema, make_lr_scheduler, make_optimizer, total_steps


class GANTrainer(Trainer):
    """Trains a Generator and a Discriminator per a TrainGANConfig and saves the EMA generator."""

    name = "train_gan"
    summary_class = GANSummary
    upload_files = ["generator"]

    def __init__(self, cfg: TrainGANConfig, accelerator: Accelerator) -> None:
        cfg = resolve_conditioning(cfg)  # --conditioning auto becomes pose or none here
        super().__init__(cfg, accelerator)
        self.images, self.data_name = load_images(cfg, cfg.resolution)
        self.skipped = list(self.images.skipped)
        self.total_steps = total_steps(cfg, len(self.images), accelerator.num_processes)
        self.maps = validation_maps(self.images, min(cfg.num_validation_images, len(self.images)))
        self.stat_maps = validation_maps(self.images, STANDING_LATENTS)  # None without maps
        self.diversity_history: list[tuple[int, float]] = []
        self._real_diversity: dict[int, float] = {}  # per sample count: the training images' own, measured once
        self._build()

    def _build(self) -> None:
        """Both networks, an AdamW and LR schedule each (two learning rates: TTUR), the generator's EMA."""
        cfg, acc = self.cfg, self.accelerator
        set_seed(cfg.seed)  # the initial weights
        gen, disc = Generator(**cfg.arch.to_json()), Discriminator(**cfg.arch.to_json())
        g_opt = make_optimizer(list(gen.parameters()), cfg.adamw)
        d_opt = make_optimizer(list(disc.parameters()), replace(cfg.adamw, lr=cfg.d_learning_rate or cfg.learning_rate))
        g_steps = -(-self.total_steps // cfg.n_critic)
        g_sched = make_lr_scheduler(cfg, g_opt, g_steps, acc.num_processes)
        d_sched = make_lr_scheduler(cfg, d_opt, self.total_steps, acc.num_processes)
        self.ema = make_ema(cfg, gen)
        self.gen, self.disc, g_opt, d_opt, g_sched, d_sched = acc.prepare(gen, disc, g_opt, d_opt, g_sched, d_sched)
        if self.ema is not None:
            self.ema.to(acc.device)
        self.phases = [  # the discriminator first: its loss runs every step and is the run's loss
            Phase("discriminator", [self.disc], list(self.disc.parameters()), d_opt, d_sched),
            Phase("generator", [self.gen], list(self.gen.parameters()), g_opt, g_sched, self.ema, every=cfg.n_critic)]

    def batches(self, start_step: int) -> Iterator[StepBatch]:
        """Micro-batches of images (B, 3, R, R), or images and maps (B, 6, R, R), uint8 scaled to [-1, 1]."""
        yield from step_batches(self.images, self.cfg, self.accelerator, batch_size=self.cfg.train_batch_size,
                                seed=self.cfg.seed * 31, steps=range(start_step, self.total_steps),
                                skipped=self.skipped)

    def _latents(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(count, self.cfg.z_dim, generator=generator).to(self.accelerator.device)

    def _critic(self, disc, images: torch.Tensor, maps: torch.Tensor | None,
                generator: torch.Generator) -> torch.Tensor:
        """D's logits (B,) on `images` after DiffAugment (the map moves with its image)."""
        images, maps = diff_augment(images, self.cfg.augment_policy, generator=generator, pose_map=maps)
        return disc(images, maps)

    def loss(self, phase: Phase, micro_batch: MicroBatch, generator: torch.Generator) -> torch.Tensor:
        """The discriminator's loss (with its penalties) or the generator's, on one micro-batch."""
        batch = micro_batch.pixels.to(self.accelerator.device)  # augmentation labels unused: D sees DiffAugment
        real, maps = batch[:, :3], (batch[:, 3:] if self.cfg.uses_pose_maps else None)  # (B, 3, R, R) each
        z = self._latents(real.shape[0], generator)
        with self.accelerator.autocast():
            if phase.name == "generator":
                return self._generator_loss(z, maps, generator)
            return self._discriminator_loss(real, z, maps, generator)

    def _generator_loss(self, z: torch.Tensor, maps: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        disc = self.accelerator.unwrap_model(self.disc)  # no all-reduce of D's gradients: none are recorded
        disc.requires_grad_(False)  # the graph carries gradients through D to G, none to D's weights
        try:
            fake_logits = self._critic(disc, self.gen(z, maps), maps, generator)
        finally:
            disc.requires_grad_(True)
        return g_loss(self.cfg.gan_loss, fake_logits)

    def _discriminator_loss(self, real: torch.Tensor, z: torch.Tensor, maps: torch.Tensor | None,
                            generator: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        with torch.no_grad():
            fake = self.accelerator.unwrap_model(self.gen)(z, maps)
        real = real.detach().requires_grad_(cfg.r1_gamma > 0)
        real_logits = self._critic(self.disc, real, maps, generator)
        loss = d_loss(cfg.gan_loss, real_logits, self._critic(self.disc, fake, maps, generator))
        if cfg.r1_gamma:  # on the augmented reals' logits, with respect to the images before augmentation
            loss = loss + cfg.r1_gamma / 2 * r1_penalty(real_logits, real)
        if cfg.gp_weight:
            loss = loss + cfg.gp_weight * gradient_penalty(
                lambda x: self._critic(self.disc, x, maps, generator), real, fake, generator=generator)
        return loss

    def _sample(self, count: int, maps: torch.Tensor | None, seed: int) -> np.ndarray:
        """`count` images (N, R, R, 3) uint8 from the EMA generator, fixed latents from `seed`."""
        gen = self.accelerator.unwrap_model(self.gen)
        with averaged(gen, self.ema, maps=self.stat_maps):
            return generate(gen, count, seed=seed, maps=maps, device=self.accelerator.device)

    def validate(self, step: int, name: str | None = None) -> Path:
        """A grid from the EMA generator (pose | sample pairs with maps), and the collapse watch's diversity."""
        cfg = self.cfg
        maps = self.maps if cfg.uses_pose_maps else None
        images = self._sample(len(maps) if maps is not None else cfg.num_validation_images, maps, cfg.seed)
        self._watch_collapse(step, images)
        path = self.samples_path(step, name)
        if maps is not None:
            poses = ((maps + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            images = np.stack([im for pair in zip(poses, images, strict=True) for im in pair])
        make_grid(images, cols=8 if maps is not None and len(images) >= 8 else None).save(path)
        log_images(self.accelerator, images, step)
        return path

    def _watch_collapse(self, step: int, images: np.ndarray) -> None:
        """Log the samples' diversity (relative to the training images'); warn when it falls below the threshold
        times its best so far."""
        if len(images) not in self._real_diversity:
            self._real_diversity[len(images)] = diversity(np.stack(self.reference_images(len(images))))
        value = diversity(images) / max(self._real_diversity[len(images)], 1e-8)
        best = max((v for _, v in self.diversity_history), default=value)
        self.diversity_history.append((step, round(float(value), 4)))
        self.accelerator.log({"diversity": value}, step=step)
        if value < self.cfg.collapse_threshold * best:
            self.accelerator.print(f"step {step}: sample diversity fell to {value:.3f} (best {best:.3f}): the "
                                   f"generator may be collapsing; see samples/ and consider --r1_gamma, "
                                   f"--diffaugment or a lower --learning_rate")

    def eval_images(self, count: int) -> np.ndarray:
        maps = validation_maps(self.images, count) if self.cfg.uses_pose_maps else None
        return self._sample(count, maps, self.cfg.seed + EVAL_SEED_OFFSET)

    def reference_images(self, count: int) -> list[np.ndarray]:
        """`count` training images spread over the set, centre R x R, as (R, R, 3) uint8."""
        res = self.cfg.resolution
        return [centre(self.images.get(i)[:3], res).permute(1, 2, 0).numpy() for i in spread(len(self.images), count)]

    def state(self) -> dict:
        return {"diversity_history": self.diversity_history}

    def load_state(self, state: dict) -> None:
        self.diversity_history = [tuple(p) for p in state.get("diversity_history", [])]

    def save_weights(self, folder: Path) -> None:
        acc = self.accelerator
        save_networks(acc.unwrap_model(self.gen), acc.unwrap_model(self.disc), self.ema, folder, maps=self.stat_maps)

    def load_weights(self, folder: Path) -> None:
        acc = self.accelerator
        load_networks(acc.unwrap_model(self.gen), acc.unwrap_model(self.disc), self.ema, folder)
        if self.ema is not None:
            self.ema.to(acc.device)

    def save(self, summary: RunSummary) -> None:
        """The EMA generator at output_dir/generator; the collapse verdict in the summary."""
        save_generator(self.accelerator.unwrap_model(self.gen), self.ema, self.out / "generator", maps=self.stat_maps)
        last = summary.start_step + summary.steps_done  # the final grid is made after the last step taken
        summary.diversity = [(min(step, last), value) for step, value in self.diversity_history]

    def model_card(self, summary: RunSummary) -> CardInfo:
        return card_info(self.cfg, summary)

    def skipped_files(self) -> list[str]:
        return self.skipped
