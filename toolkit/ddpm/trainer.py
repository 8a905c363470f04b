"""The DDPM trainer: a UNet2DModel from scratch on images (optionally conditioned on pose maps), for the shared loop.

It supplies the UNet with AdamW and EMA, the data of each step (progressive-resolution stages included), the
diffusion loss, EMA validation grids, and the saved DDPMPipeline. Everything else is `toolkit.training.loop`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save_file

from toolkit.data.augment import NUM_LABELS, settings_of
from toolkit.data.dataset import (
    MicroBatch,
    centre,
    load_images,
    resolve_conditioning,
    step_batches,
    validation_maps,
)
from toolkit.ddpm.augment_labels import AugmentLabels, NoLabels
from toolkit.ddpm.card import card_info
from toolkit.ddpm.config import Stage, TrainUNetConfig
from toolkit.ddpm.model import build_unet, check_resolution
from toolkit.ddpm.outputs import DDPMSummary, load_unet, save_pipeline, save_unet
from toolkit.errors import UserError
from toolkit.hub import CardInfo
from toolkit.metrics.lpips import load_lpips
from toolkit.sampling import generate, make_grid, make_scheduler
from toolkit.training.budget import PLAN_AFTER, backward_seconds
from toolkit.training.evaluation import EVAL_SEED_OFFSET, spread
from toolkit.training.loop import Phase, StepBatch, Trainer
from toolkit.training.losses import StructureLoss, diffusion_loss
from toolkit.training.report import RunSummary, log_images
from toolkit.training.runs import (
    ema_weights,
    enable_xformers,
    make_ema,
    make_lr_scheduler,
    make_optimizer,
    total_steps,
)


def resolve_stages(cfg: TrainUNetConfig, num_images: int, world: int) -> list[Stage]:
    """The stages to train: the recipe's list, or one stage from max_train_steps / num_epochs / the default."""
    if cfg.stages:
        return [Stage(s.resolution, s.steps, s.train_batch_size or cfg.train_batch_size) for s in cfg.stages]
    return [Stage(cfg.resolution, total_steps(cfg, num_images, world), cfg.train_batch_size)]


AUGMENT_FILE = "augment_labels.safetensors"  # in checkpoints: the augmentation labels' map


class DDPMTrainer(Trainer):
    """Trains a UNet2DModel per a TrainUNetConfig and saves a DDPMPipeline (PoseDDPMPipeline with pose maps)."""

    name = "train_unet"
    summary_class = DDPMSummary
    upload_files = ["model_index.json", "unet", "scheduler"]

    def __init__(self, cfg: TrainUNetConfig, accelerator: Accelerator) -> None:
        cfg = resolve_conditioning(cfg)  # auto becomes pose or none here, and config.yaml records which
        super().__init__(cfg, accelerator)
        self.images, self.data_name = load_images(cfg, cfg.stages[0].resolution if cfg.stages else cfg.resolution)
        self.skipped = list(self.images.skipped)
        self.stages = resolve_stages(cfg, len(self.images), accelerator.num_processes)
        self.total_steps = sum(s.steps for s in self.stages)
        self.solver_steps = cfg.num_inference_steps
        self.resolution = self.images.resolution
        self.maps = validation_maps(self.images, min(cfg.num_validation_images, len(self.images)))
        self._build_model()

    def _build_model(self) -> None:
        """The UNet, its noise schedule, AdamW with its LR schedule and the EMA, prepared by Accelerate."""
        cfg, acc = self.cfg, self.accelerator
        set_seed(cfg.seed)  # the initial weights
        in_channels = 6 if cfg.conditioning == "pose" else 3  # the pose map rides along as 3 more input channels
        unet = build_unet(cfg.model_preset, self.stages[-1].resolution, dropout=cfg.dropout,
                          config_path=cfg.model_config_name_or_path, in_channels=in_channels)
        for stage in self.stages:
            check_resolution(unet, stage.resolution)
        if cfg.enable_xformers_memory_efficient_attention:
            enable_xformers([unet], acc.device, acc.print)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=cfg.ddpm_num_steps,
                                             beta_schedule=cfg.ddpm_beta_schedule,
                                             prediction_type=cfg.prediction_type or "epsilon")
        settings = settings_of(cfg)  # zoom, rotation, shift or colour: the UNet is told (flips need no label)
        self.augment_labels = AugmentLabels(unet, NUM_LABELS) if settings.labelled and cfg.augment_conditioning \
            else NoLabels()
        extra = list(self.augment_labels.parameters()) if isinstance(self.augment_labels, AugmentLabels) else []
        optimizer = make_optimizer(list(unet.parameters()) + extra, cfg.adamw)
        lr_scheduler = make_lr_scheduler(cfg, optimizer, self.total_steps, acc.num_processes)
        self.ema = make_ema(cfg, unet)  # of the UNet only: sampling gives no labels
        self.unet, optimizer, lr_scheduler = acc.prepare(unet, optimizer, lr_scheduler)
        self.augment_forward = acc.prepare(self.augment_labels) if extra else None  # its gradients all-reduced too
        if self.ema is not None:
            self.ema.to(acc.device)
        modules = [self.unet] + ([self.augment_forward] if extra else [])
        self.phases = [Phase("unet", modules, list(self.unet.parameters()) + extra, optimizer, lr_scheduler,
                             self.ema, ema_params=list(self.unet.parameters()))]
        self.structure = StructureLoss(cfg.ssim_loss_weight, cfg.lpips_loss_weight,
                                       load_lpips(cfg.lpips_net, device=acc.device) if cfg.lpips_loss_weight else None)

    def relative_step_cost(self, step: int) -> float:
        """A progressive run's mean step cost over its stages' steps, relative to the stage of the steps just timed
        (step `step` - 1); each stage's cost is a timed forward and backward at its resolution and batch."""
        if len(self.stages) == 1:
            return 1.0
        costs = self.stage_step_seconds()
        mean = sum(c * stage.steps for c, stage in zip(costs, self.stages, strict=True)) / self.total_steps
        ends = np.cumsum([stage.steps for stage in self.stages])
        return mean / costs[min(int(np.searchsorted(ends, step - 1, side="right")), len(costs) - 1)]

    def stage_step_seconds(self) -> list[float]:
        """Seconds of a forward and backward of one micro-batch of each stage, on random inputs (the step cost does
        not scale with pixels x batch: on a 2-core CPU a 64 px step of 16 costs 3x a 32 px step of 32, not 2x)."""
        acc = self.accelerator
        unet = acc.unwrap_model(self.unet)  # no DDP hooks: only the main process times
        params = [p for p in unet.parameters() if p.requires_grad]
        generator = torch.Generator().manual_seed(0)

        def forward(stage: Stage) -> torch.Tensor:
            shape = (stage.train_batch_size, unet.config.in_channels, stage.resolution, stage.resolution)
            noisy = torch.randn(shape, generator=generator).to(acc.device)
            timesteps = torch.randint(0, self.cfg.ddpm_num_steps, shape[:1], generator=generator).to(acc.device)
            with acc.autocast():
                return unet(noisy, timesteps).sample

        return [backward_seconds(lambda stage=stage: forward(stage), params) for stage in self.stages]

    def replannable(self) -> bool:
        """Single-stage runs only: a second plan could move a stage boundary behind the current step."""
        return len(self.stages) == 1

    def set_total_steps(self, total: int) -> None:
        """The time budget's length: one stage gets it all; progressive stages share it in their recipe
        proportions (each keeps at least one step, the first at least the steps already made)."""
        shares = np.array([stage.steps for stage in self.stages], dtype=np.float64)
        steps = np.maximum(1, np.floor(total * shares / shares.sum())).astype(int)
        steps[-1] += max(0, total - int(steps.sum()))  # the rounding remainder goes to the last stage
        steps[0] = max(int(steps[0]), PLAN_AFTER + 1)
        self.stages = [Stage(s.resolution, int(n), s.train_batch_size) for s, n in zip(self.stages, steps, strict=True)]
        super().set_total_steps(int(steps.sum()))

    def batches(self, start_step: int) -> Iterator[StepBatch]:
        """Each stage's micro-batches, grouped per optimiser step, from `start_step` on."""
        stage_start = 0
        for index, stage in enumerate(self.stages):
            stage_end, first = stage_start + stage.steps, max(start_step, stage_start)
            if first < stage_end:
                self._use_resolution(stage.resolution)
                yield from step_batches(self.images, self.cfg, self.accelerator, batch_size=stage.train_batch_size,
                                        seed=self.cfg.seed * 31 + index, steps=range(first - stage_start, stage.steps),
                                        skipped=self.skipped, logs={"resolution": stage.resolution})
            stage_start = stage_end

    def _use_resolution(self, resolution: int) -> None:
        """Decode the images again for a stage at another resolution (same resolution: they serve as they are)."""
        if self.images.resolution != resolution:
            self.images, _ = load_images(self.cfg, resolution)
            self.skipped.extend(self.images.skipped)
            self.maps = validation_maps(self.images, min(self.cfg.num_validation_images, len(self.images)))
        self.resolution = resolution

    def loss(self, phase: Phase, micro_batch: MicroBatch, generator: torch.Generator) -> torch.Tensor:
        """The weighted diffusion loss of images (B, 3, R, R), or (B, 6, R, R) with pose maps, in [-1, 1]."""
        cfg = self.cfg
        batch = micro_batch.to(self.accelerator.device)
        x0, maps = batch.pixels[:, :3], batch.pixels[:, 3:]  # images (B, 3, R, R); pose maps (B, 3 or 0, R, R)

        def predict(noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            if cfg.conditioning == "pose":
                noisy = torch.cat([noisy, maps], dim=1)  # (B, 6, R, R): the map rides along as input channels
            with self.augment_labels.given(batch.labels, self.augment_forward):  # told what augmentation did
                return self.unet(noisy, timesteps).sample  # autocast applied by Accelerate's prepared forward

        return diffusion_loss(predict, self.noise_scheduler, x0, generator=generator, noise_offset=cfg.noise_offset,
                              snr_gamma=cfg.snr_gamma, edm_sigma_data=cfg.edm_sigma_data, pose_maps=maps,
                              pose_loss_weight=cfg.pose_loss_weight, structure=self.structure)

    def _sample(self, count: int, maps: torch.Tensor | None, seed: int, batch_size: int = 16) -> np.ndarray:
        """`count` images (N, H, W, 3) uint8 with the EMA weights and the fast validation solver."""
        cfg = self.cfg
        scheduler = make_scheduler(cfg.validation_scheduler, self.noise_scheduler.config)
        unet = self.accelerator.unwrap_model(self.unet)
        unet.eval()
        try:  # training mode comes back also when sampling fails (out of memory during a validation)
            with ema_weights(self.ema, unet):
                images = generate(unet, scheduler, count, num_inference_steps=cfg.num_inference_steps, seed=seed,
                                  resolution=self.resolution, conditioning=maps, batch_size=batch_size)
        finally:
            unet.train()
        return images

    def validate(self, step: int, name: str | None = None) -> Path:
        """Sample a grid with the EMA weights and the fast validation solver; save it as PNG and log it."""
        cfg = self.cfg
        if step >= self.total_steps:  # the final grid is at the last stage's resolution, also right after a resume
            self._use_resolution(self.stages[-1].resolution)
        maps = self.maps if cfg.conditioning == "pose" else None
        images = self._sample(len(maps) if maps is not None else cfg.num_validation_images, maps, cfg.seed)
        path = self.samples_path(step, name)
        if maps is not None:  # pose | sample pairs, side by side
            poses = ((maps + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            images = np.stack([im for pair in zip(poses, images, strict=True) for im in pair])
        make_grid(images, cols=8 if maps is not None and len(images) >= 8 else None).save(path)
        log_images(self.accelerator, images, step)
        return path

    def eval_images(self, count: int) -> np.ndarray:
        """Samples for the in-loop KID (other seeds than the grid's); pose runs cycle through the training maps."""
        maps = validation_maps(self.images, count) if self.cfg.conditioning == "pose" else None
        return self._sample(count, maps, self.cfg.seed + EVAL_SEED_OFFSET, batch_size=32)

    def reference_images(self, count: int) -> list[np.ndarray]:
        """`count` training images spread over the set, centre R x R, as (R, R, 3) uint8."""
        return [centre(self.images.get(i)[:3], self.resolution).permute(1, 2, 0).numpy()
                for i in spread(len(self.images), count)]

    def save_weights(self, folder: Path) -> None:
        save_unet(self.accelerator.unwrap_model(self.unet), self.ema, folder)
        if isinstance(self.augment_labels, AugmentLabels):
            save_file(self.augment_labels.state_dict(), str(folder / AUGMENT_FILE))

    def load_weights(self, folder: Path) -> None:
        load_unet(self.accelerator.unwrap_model(self.unet), self.ema, folder)
        if self.ema is not None:
            self.ema.to(self.accelerator.device)
        if isinstance(self.augment_labels, AugmentLabels):
            if not (folder / AUGMENT_FILE).is_file():
                raise UserError(f"{folder} was trained without augmentation labels: resume it with the augmentation "
                                "options it was started with (or --no-augment_conditioning)")
            self.augment_labels.load_state_dict(load_file(str(folder / AUGMENT_FILE)))

    def save(self, summary: RunSummary) -> None:
        """The pipeline, with the EMA weights, at the output folder."""
        save_pipeline(self.accelerator.unwrap_model(self.unet), self.ema, self.noise_scheduler, self.out,
                      resolution=self.stages[-1].resolution, pose_conditioned=self.cfg.conditioning == "pose")

    def model_card(self, summary: RunSummary) -> CardInfo:
        return card_info(self.cfg, summary)

    def skipped_files(self) -> list[str]:
        return self.skipped
