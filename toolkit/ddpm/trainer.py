"""The DDPM training loop: data -> noise -> UNet -> loss -> AdamW/EMA, with validation grids and atomic checkpoints.

Every random draw of optimiser step k (batch order, crops, flips, noise, timesteps, dropout) is seeded from
(seed, k), so a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from toolkit.config import save_yaml
from toolkit.data.dataset import MicroBatches, TrainImages, build_train_images, epochs_to_steps, open_source
from toolkit.ddpm.config import DEFAULT_TRAIN_STEPS, Stage, TrainUNetConfig
from toolkit.ddpm.model import build_unet, check_resolution
from toolkit.ddpm.outputs import (
    RunSummary,
    init_trackers,
    log_images,
    register_checkpoint_hooks,
    save_pipeline,
    write_summary,
)
from toolkit.errors import UserError
from toolkit.sampling import generate, make_grid, make_scheduler
from toolkit.training.checkpoints import resolve_resume, save_checkpoint
from toolkit.training.losses import (
    pose_pixel_weights,
    sample_noise,
    snr_weights,
    training_target,
    weighted_mse,
)
from toolkit.training.runs import make_accelerator, maybe_resume


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class Run:
    """Everything the loop touches, built once."""

    cfg: TrainUNetConfig
    accelerator: Accelerator
    unet: torch.nn.Module
    noise_scheduler: DDPMScheduler
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    ema: EMAModel | None
    stages: list[Stage]
    out: Path
    source_name: str = ""
    validation_maps: torch.Tensor | None = None  # (N, 3, R, R) in [-1, 1]: the poses of the validation grid

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


def resolve_stages(cfg: TrainUNetConfig, num_images: int, world: int) -> list[Stage]:
    """The stages to train: the recipe's list, or one stage from max_train_steps / num_epochs / the default."""
    if cfg.stages:
        return [Stage(s.resolution, s.steps, s.train_batch_size or cfg.train_batch_size) for s in cfg.stages]
    per_step = cfg.train_batch_size * cfg.gradient_accumulation_steps * world
    if cfg.max_train_steps:
        steps = cfg.max_train_steps
    elif cfg.num_epochs:
        steps = epochs_to_steps(cfg.num_epochs, num_images, per_step)
    else:
        steps = DEFAULT_TRAIN_STEPS
    return [Stage(cfg.resolution, steps, cfg.train_batch_size)]


def load_images(cfg: TrainUNetConfig, resolution: int) -> tuple[TrainImages, str]:
    """Decode the training images at `resolution` (skipping unreadable files)."""
    maps = cfg.conditioning_image_column if cfg.uses_pose_maps else None
    source, name = open_source(cfg.train_data_dir, cfg.dataset_name, cfg.dataset_config_name, cfg.image_column,
                               cfg.num_figures, resolution, cfg.seed, conditioning_column=maps)
    images = build_train_images(source, resolution, cfg.center_crop, cfg.cache_images, cfg.max_train_samples,
                                with_conditioning=cfg.uses_pose_maps)
    return images, name


def validation_maps(images: TrainImages, count: int) -> torch.Tensor | None:
    """The pose maps of the first `count` training images, centre-cropped: (N, 3, R, R) in [-1, 1]."""
    if not images.with_conditioning:
        return None
    r, maps = images.resolution, []
    for i in range(min(count, len(images))):
        pose = images.get(i)[3:]  # (3, H, W) uint8
        top, left = (pose.shape[1] - r) // 2, (pose.shape[2] - r) // 2
        maps.append(pose[:, top:top + r, left:left + r])
    return torch.stack(maps).float().div(127.5).sub(1.0)


def build_run(cfg: TrainUNetConfig, accelerator: Accelerator, stages: list[Stage], out: Path) -> Run:
    """Model, noise schedule, optimiser, LR schedule and EMA, prepared by Accelerate with checkpoint hooks."""
    set_seed(cfg.seed)  # the initial weights
    in_channels = 6 if cfg.conditioning == "pose" else 3  # the pose map rides along as 3 more input channels
    unet = build_unet(cfg.model_preset, stages[-1].resolution, cfg.dropout, cfg.model_config_name_or_path,
                      in_channels=in_channels)
    for stage in stages:
        check_resolution(unet, stage.resolution)
    _enable_attention_backend(cfg, accelerator, unet)
    noise_scheduler = DDPMScheduler(num_train_timesteps=cfg.ddpm_num_steps, beta_schedule=cfg.ddpm_beta_schedule,
                                    prediction_type=cfg.prediction_type)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
    total = sum(s.steps for s in stages)
    # Accelerate steps a prepared scheduler once per process per call, hence the num_processes factor.
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps
                                 * accelerator.num_processes, num_training_steps=total * accelerator.num_processes)
    ema = None
    if cfg.use_ema:
        ema = EMAModel(unet.parameters(), decay=cfg.ema_max_decay, use_ema_warmup=True, inv_gamma=cfg.ema_inv_gamma,
                       power=cfg.ema_power, foreach=True, model_cls=UNet2DModel, model_config=unet.config)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
    run = Run(cfg, accelerator, unet, noise_scheduler, optimizer, lr_scheduler, ema, stages, out)
    register_checkpoint_hooks(accelerator, lambda: run.ema)
    return run


def _enable_attention_backend(cfg: TrainUNetConfig, accelerator: Accelerator, unet: UNet2DModel) -> None:
    if not cfg.enable_xformers_memory_efficient_attention:
        return  # diffusers uses PyTorch SDPA by default
    from diffusers.utils.import_utils import is_xformers_available

    if accelerator.device.type != "cuda" or not is_xformers_available():
        accelerator.print("xformers needs CUDA and `pip install xformers`: using PyTorch SDPA attention instead")
        return
    unet.enable_xformers_memory_efficient_attention()


def micro_loss(run: Run, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The weighted diffusion loss of one micro-batch (B, 3, R, R), or (B, 6, R, R) with pose maps, in [-1, 1]."""
    cfg, sched = run.cfg, run.noise_scheduler
    batch = batch.to(run.accelerator.device)
    x0, maps = batch[:, :3], batch[:, 3:]  # images (B, 3, R, R); pose maps (B, 3 or 0, R, R)
    noise = sample_noise(x0.shape, cfg.noise_offset, generator, x0.device)
    timesteps = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=generator)
    timesteps = timesteps.to(x0.device)
    noisy = sched.add_noise(x0, noise, timesteps)
    if cfg.conditioning == "pose":
        noisy = torch.cat([noisy, maps], dim=1)  # (B, 6, R, R)
    pred = run.unet(noisy, timesteps).sample  # autocast applied by Accelerate's prepared forward
    target = training_target(sched, x0, noise, timesteps)
    pixel_weights = pose_pixel_weights(maps, x0.shape[-2:], cfg.pose_loss_weight) if cfg.pose_loss_weight else None
    return weighted_mse(pred, target, snr_weights(sched, timesteps, cfg.snr_gamma), pixel_weights)


def train_step(run: Run, micro_batches: list[torch.Tensor], step: int) -> tuple[float, float]:
    """One optimiser step over the micro-batches (gradient accumulation); returns (loss, grad norm)."""
    acc, cfg = run.accelerator, run.cfg
    seed = (cfg.seed * 1_000_003 + step) * acc.num_processes + acc.process_index
    torch.manual_seed(seed)  # dropout draws from the global generator
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for i, x0 in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if last else acc.no_sync(run.unet):  # all-reduce only on the last
            loss = micro_loss(run, x0, generator) / len(micro_batches)
            acc.backward(loss)
        total += loss.item()
    if not math.isfinite(total):
        kept = resolve_resume(run.out / "checkpoints", "latest")
        raise TrainingDiverged(
            f"loss became {total} at step {step + 1}: stopped without saving this step. Last good checkpoint: "
            f"{kept or 'none yet'}. Try a lower --learning_rate, --max_grad_norm 1, or --mixed_precision no.")
    grad_norm = acc.clip_grad_norm_(run.unet.parameters(), cfg.max_grad_norm or float("inf"))
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.step(run.unet.parameters())
    return total, float(grad_norm)


def validate(run: Run, step: int, resolution: int, name: str | None = None) -> Path:
    """Sample a grid with the EMA weights and the fast validation solver; save it as PNG and log it."""
    cfg, acc = run.cfg, run.accelerator
    unet = acc.unwrap_model(run.unet)
    if run.ema is not None:
        run.ema.store(unet.parameters())
        run.ema.copy_to(unet.parameters())
    unet.eval()
    scheduler = make_scheduler(cfg.validation_scheduler, run.noise_scheduler.config)
    maps = run.validation_maps if cfg.conditioning == "pose" else None
    count = len(maps) if maps is not None else cfg.num_validation_images
    images = generate(unet, scheduler, count, cfg.num_inference_steps, cfg.seed, resolution=resolution,
                      conditioning=maps)  # (N, H, W, 3) uint8
    unet.train()
    if run.ema is not None:
        run.ema.restore(unet.parameters())
    path = run.out / "samples" / f"{name or f'step_{step:06d}'}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if maps is not None:  # pose | sample pairs, side by side
        poses = ((maps + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        images = np.stack([im for pair in zip(poses, images, strict=True) for im in pair])
    make_grid(images, cols=8 if maps is not None and len(images) >= 8 else None).save(path)
    log_images(acc, images, step)
    return path


def _stage_batches(run: Run, stage_index: int, images: TrainImages, first_step: int, stage_start: int):
    """A DataLoader yielding (micro-batch, failed files) from optimiser step `first_step` of the stage on."""
    cfg, acc, stage = run.cfg, run.accelerator, run.stages[stage_index]
    accum = cfg.gradient_accumulation_steps
    flip = cfg.random_flip and not cfg.uses_pose_maps  # a mirrored OpenPose map swaps left and right colours
    batches = MicroBatches(images, stage.train_batch_size, cfg.seed * 31 + stage_index, flip,
                           shard=(acc.process_index, acc.num_processes))
    first = (first_step - stage_start) * accum
    last = stage.steps * accum
    workers = cfg.dataloader_num_workers if images.cached is None else 0
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(first, last), num_workers=workers)


def train(cfg: TrainUNetConfig) -> RunSummary:
    """Train a UNet2DModel per `cfg` and save a DDPMPipeline; returns the run's summary."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator, precision_reason = make_accelerator(cfg, out)
    accelerator.print(f"mixed precision: {accelerator.mixed_precision} ({precision_reason})")
    images, source_name = load_images(cfg, (cfg.stages[0].resolution if cfg.stages else cfg.resolution))
    stages = resolve_stages(cfg, len(images), accelerator.num_processes)
    run = build_run(cfg, accelerator, stages, out)
    run.source_name = source_name
    run.validation_maps = validation_maps(images, cfg.num_validation_images)
    if cfg.random_flip and cfg.uses_pose_maps:
        accelerator.print("random flips are off: a mirrored OpenPose map would swap left and right")
    save_yaml(cfg, out / "config.yaml")
    init_trackers(accelerator, cfg)
    try:
        step, resumed_from, state = maybe_resume(accelerator, out, cfg.resume_from_checkpoint,
                                                 cfg.overwrite_output_dir)
        history = list(state.get("loss_history", []))
        summary = _loop(run, images, step, history)
        summary.resumed_from = resumed_from
        summary.mixed_precision = f"{accelerator.mixed_precision} ({precision_reason})"
        save_pipeline(run.accelerator, run.unet, run.ema, run.noise_scheduler, out, stages[-1].resolution,
                      pose_conditioned=cfg.conditioning == "pose")
        summary.samples = str(validate(run, run.total_steps, stages[-1].resolution, name="final"))
    finally:
        accelerator.end_training()  # flush the trackers, also when the run stops on an error
    if accelerator.is_main_process:  # one writer: other processes never saw the final validation
        write_summary(summary, out)
    return summary


def _loop(run: Run, images: TrainImages, step: int, history: list[float]) -> RunSummary:
    cfg, acc = run.cfg, run.accelerator
    summary = RunSummary(output_dir=str(run.out), total_steps=run.total_steps, start_step=step, data=run.source_name,
                         loss_history=history, skipped_files=list(images.skipped))
    bar = tqdm(total=run.total_steps, initial=step, desc="training", disable=not acc.is_local_main_process)
    stage_start = 0
    for index, stage in enumerate(run.stages):
        stage_end = stage_start + stage.steps
        if step < stage_end:
            if images.resolution != stage.resolution:  # same resolution: the decoded images serve as they are
                images, _ = load_images(cfg, stage.resolution)
                summary.skipped_files.extend(images.skipped)
                run.validation_maps = validation_maps(images, cfg.num_validation_images)
            _run_stage(run, index, images, step, stage_start, bar, summary)
            step = stage_end
        stage_start = stage_end
    bar.close()
    summary.skipped_files = sorted(set(summary.skipped_files))  # a file fails again at each stage
    return summary


def _run_stage(run: Run, index: int, images: TrainImages, step: int, stage_start: int, bar, summary: RunSummary):
    cfg, acc, stage = run.cfg, run.accelerator, run.stages[index]
    accum, pending = cfg.gradient_accumulation_steps, []
    tick = time.perf_counter()
    for micro, failed in _stage_batches(run, index, images, step, stage_start):
        pending.append(micro)
        summary.skipped_files.extend(failed)
        if len(pending) < accum:
            continue
        loss, grad_norm = train_step(run, pending, step)
        pending, step = [], step + 1
        elapsed = time.perf_counter() - tick
        summary.add_step(loss, elapsed, stage.train_batch_size * accum * acc.num_processes)
        acc.log({"loss": loss, "lr": run.lr_scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                 "img_per_s": summary.last_rate, "resolution": stage.resolution}, step=step)
        bar.update(1)
        bar.set_postfix(loss=f"{summary.smoothed_loss:.4f}", img_s=f"{summary.last_rate:.1f}")
        if step % cfg.checkpointing_steps == 0 or step == run.total_steps:
            state = {"loss": summary.smoothed_loss, "loss_history": summary.loss_history}
            save_checkpoint(acc, run.out / "checkpoints", step, state, cfg.checkpoints_total_limit)
        if step % cfg.validation_steps == 0 and step != run.total_steps:
            validate(run, step, stage.resolution)
        tick = time.perf_counter()
