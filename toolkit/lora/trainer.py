"""The pose-LoRA training loop: cached latents and captions -> noise -> frozen ControlNet residuals -> UNet with LoRA
-> (pose-weighted) loss -> AdamW on the adapters, with validation, atomic checkpoints and exact resume.

Every random draw of optimiser step k (batch order, flips, caption dropout, latent sample, noise, timesteps, LoRA
dropout) is seeded from (seed, k), so a resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from toolkit.config import save_yaml
from toolkit.data.dataset import batch_indices
from toolkit.ddpm.outputs import RunSummary, init_trackers, log_images, write_summary
from toolkit.errors import UserError
from toolkit.lora import validation as V
from toolkit.lora.batches import Caches, build_caches, make_batch
from toolkit.lora.config import PoseLoraConfig
from toolkit.lora.data import PoseData, open_data
from toolkit.lora.finish import finish
from toolkit.lora.models import Models, add_adapters, enable_speedups, load_models, make_optimizer, place
from toolkit.lora.outputs import register_hooks, save_lora
from toolkit.training.checkpoints import save_checkpoint
from toolkit.training.losses import (
    pose_pixel_weights,
    sample_noise,
    snr_weights,
    training_target,
    weighted_mse,
)
from toolkit.training.runs import make_accelerator, maybe_resume

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class LoraRun:
    """Everything the loop touches, built once."""

    cfg: PoseLoraConfig
    accelerator: Accelerator
    models: Models
    unet: torch.nn.Module  # the prepared (possibly wrapped) UNet; models.unet is the bare one
    controlnet: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    data: PoseData
    caches: Caches
    val: V.ValidationSet
    out: Path
    weight_dtype: torch.dtype
    detector: object = None
    base_images: np.ndarray | None = None  # the base model's validation images: the same every time
    scores: dict = field(default_factory=dict)  # the latest validation's pose scores (lora and base)
    best_pck: float = -1.0


def build_run(cfg: PoseLoraConfig) -> tuple[LoraRun, str]:
    """Models with adapters, data and caches, optimiser and schedule, prepared by Accelerate with checkpoint hooks."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator, reason = make_accelerator(cfg, out)
    set_seed(cfg.seed)  # the LoRA initialisation (and a ControlNet made from the UNet): the same on resume
    if not cfg.controlnet_model_name_or_path and cfg.train_controlnet == "no":
        accelerator.print("no --controlnet_model_name_or_path: a ControlNet made from the UNet adds nothing until it "
                          "is trained (its zero convolutions output 0); pass --train_controlnet lora or full")
    models = load_models(cfg)
    params = add_adapters(cfg, models)
    weight_dtype = DTYPES.get(accelerator.mixed_precision, torch.float32)
    place(models, cfg, accelerator.device, weight_dtype)
    enable_speedups(cfg, models, accelerator.device, accelerator.print)
    optimizer = make_optimizer(cfg, params, accelerator.device, accelerator.print)
    world = accelerator.num_processes  # a prepared scheduler steps once per process per call
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps * world,
                                 num_training_steps=cfg.max_train_steps * world)
    unet, optimizer, lr_scheduler = accelerator.prepare(models.unet, optimizer, lr_scheduler)
    controlnet = accelerator.prepare(models.controlnet) if cfg.train_controlnet != "no" else models.controlnet
    for module in (models.unet, models.controlnet):  # drop Accelerate's fp32-output wrapper: micro_loss autocasts
        accelerator.unwrap_model(module, keep_fp32_wrapper=False)  # itself, and pipelines need same-dtype residuals
    register_hooks(accelerator, cfg, models)
    data = open_data(cfg)
    caches = build_caches(cfg, data, models, accelerator.device, weight_dtype)
    val = V.validation_set(cfg, data, models.tokenizer)
    run = LoraRun(cfg, accelerator, models, unet, controlnet, params, optimizer, lr_scheduler, data, caches, val, out,
                  weight_dtype)
    if cfg.score_poses and accelerator.is_main_process:
        run.detector = V.make_detector(accelerator.print)
    return run, reason


def micro_loss(run: LoraRun, indices: list[int], generator: torch.Generator) -> torch.Tensor | None:
    """The (pose-weighted) diffusion loss of one micro-batch; None when none of its examples could be read."""
    cfg, sched, device, dtype = run.cfg, run.models.noise_scheduler, run.accelerator.device, run.weight_dtype
    batch = make_batch(cfg, run.data, run.models, run.caches, indices, generator, device, dtype)
    if batch is None:
        return None
    latents = batch.latents  # (B, 4, h, w), scaled
    noise = sample_noise(latents.shape, cfg.noise_offset, generator, device)
    timesteps = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=generator)
    timesteps = timesteps.to(device)
    noisy = sched.add_noise(latents, noise, timesteps).to(dtype)
    text, maps = batch.embeddings.to(dtype), batch.pose_maps.to(dtype)
    with run.accelerator.autocast():
        down, mid = run.controlnet(noisy, timesteps, encoder_hidden_states=text, controlnet_cond=maps,
                                   return_dict=False)
        pred = run.unet(noisy, timesteps, encoder_hidden_states=text,
                        down_block_additional_residuals=[d.to(dtype) for d in down],
                        mid_block_additional_residual=mid.to(dtype)).sample  # (B, 4, h, w)
    target = training_target(sched, latents, noise, timesteps)
    pixel_weights = None
    if cfg.pose_loss_weight:  # the limb mask of the pose map, pooled to latent resolution
        pixel_weights = pose_pixel_weights(batch.pose_maps * 2 - 1, latents.shape[-2:], cfg.pose_loss_weight)
    return weighted_mse(pred, target, snr_weights(sched, timesteps, cfg.snr_gamma), pixel_weights)


def train_step(run: LoraRun, step: int) -> tuple[float, float]:
    """One optimiser step over the accumulated micro-batches; returns (loss, grad norm)."""
    cfg, acc = run.cfg, run.accelerator
    seed = (cfg.seed * 1_000_003 + step) * acc.num_processes + acc.process_index
    torch.manual_seed(seed)  # LoRA dropout draws from the global generator
    generator = torch.Generator().manual_seed(seed)
    total, accum = 0.0, cfg.gradient_accumulation_steps
    for micro in range(accum):
        number = (step * accum + micro) * acc.num_processes + acc.process_index
        indices = batch_indices(len(run.data), cfg.train_batch_size, cfg.seed, number)
        with contextlib.nullcontext() if micro == accum - 1 else acc.no_sync(run.unet):
            loss = micro_loss(run, indices, generator)
            if loss is None:
                continue
            acc.backward(loss / accum)
        total += loss.item() / accum
    if not math.isfinite(total):
        raise UserError(f"loss became {total} at step {step + 1}: try a lower --learning_rate or "
                        "--mixed_precision no; the last checkpoint is kept")
    grad_norm = acc.clip_grad_norm_(run.params, cfg.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total, float(grad_norm)


def _adapters(run: LoraRun, enabled: bool) -> None:
    """Switch the LoRA adapters (UNet, and ControlNet when it carries some) on or off."""
    for model in (run.models.unet, run.models.controlnet):
        if getattr(model, "peft_config", None):
            model.enable_adapters() if enabled else model.disable_adapters()


def validate(run: LoraRun, step: int, name: str | None = None) -> Path:
    """Generate base and LoRA images for the validation triples, save the grid, log it and the pose scores."""
    cfg, acc = run.cfg, run.accelerator
    pipe = V.make_pipeline(run.models, run.models.unet, run.models.controlnet, cfg.validation_scheduler)
    run.models.unet.eval()
    lora = V.generate(pipe, run.val, cfg)
    if run.base_images is None:
        _adapters(run, False)
        run.base_images = V.generate(pipe, run.val, cfg)
        _adapters(run, True)
        if run.detector is not None:
            run.scores["base"] = V.pose_scores(run.base_images, run.val.poses, run.detector)
    run.models.unet.train()
    path = run.out / "samples" / f"{name or f'step_{step:06d}'}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = V.validation_grid(run.val, run.base_images, lora)
    grid.save(path)
    log_images(acc, np.asarray(grid)[None], step)
    if run.detector is not None:
        run.scores["lora"] = scores = V.pose_scores(lora, run.val.poses, run.detector)
        acc.log({f"pose/{k}": v for k, v in scores.items() if v is not None}, step=step)
        acc.print(f"step {step}: pose fidelity with LoRA {scores} (base {run.scores['base']})")
        pck = scores["pck@0.2_torso"] or 0.0
        if cfg.keep_best_pose_checkpoint and pck > run.best_pck:
            run.best_pck = pck
            save_lora(run.models.unet, run.out / "lora_best", cfg.alpha)
    return path


@dataclass
class LoraSummary(RunSummary):
    """The run's figures plus pose fidelity and the reload check."""

    pose_scores: dict = field(default_factory=dict)
    reload: dict = field(default_factory=dict)
    lora_files: list[str] = field(default_factory=list)
    controlnet: str | None = None  # the ControlNet to sample with: the given one, or the run's own controlnet/

    def output_rows(self) -> list[tuple[str, str]]:
        """The LoRA files, the grid, the pose scores and the reload check."""
        return [("LoRA", ", ".join(self.lora_files)), ("ControlNet", str(self.controlnet)), ("samples", self.samples),
                ("pose fidelity", str(self.pose_scores or "not scored")),
                ("reload check", "both formats load and reproduce the output" if self.reload else "-")]


def train(cfg: PoseLoraConfig) -> LoraSummary:
    """Train the LoRA per `cfg`, save it in both formats, check that they reload; returns the summary."""
    run, reason = build_run(cfg)
    acc = run.accelerator
    acc.print(f"mixed precision: {acc.mixed_precision} ({reason}); trainable parameters: "
              f"{sum(p.numel() for p in run.params):,}")
    save_yaml(cfg, run.out / "config.yaml")
    init_trackers(acc, cfg)
    try:
        step, resumed_from, state = maybe_resume(acc, run.out, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)
        summary = LoraSummary(output_dir=str(run.out), total_steps=cfg.max_train_steps, start_step=step,
                              data=cfg.train_data_dir or cfg.dataset_name, resumed_from=resumed_from,
                              loss_history=list(state.get("loss_history", [])),
                              mixed_precision=f"{acc.mixed_precision} ({reason})")
        run.best_pck = float(state.get("best_pck", -1.0))
        _loop(run, step, summary)
        if acc.is_main_process:
            summary.samples = str(validate(run, cfg.max_train_steps, name="final"))
            summary.pose_scores = dict(run.scores)
            finish(run, summary)
    finally:
        acc.end_training()
    summary.skipped_files = sorted(set(run.data.skipped))
    if acc.is_main_process:  # one writer: only the main process validated and saved
        write_summary(summary, run.out)
    return summary


def _loop(run: LoraRun, step: int, summary: LoraSummary) -> None:
    cfg, acc = run.cfg, run.accelerator
    bar = tqdm(total=cfg.max_train_steps, initial=step, desc="training", disable=not acc.is_local_main_process)
    images_per_step = cfg.train_batch_size * cfg.gradient_accumulation_steps * acc.num_processes
    while step < cfg.max_train_steps:
        tick = time.perf_counter()
        loss, grad_norm = train_step(run, step)
        step += 1
        summary.add_step(loss, time.perf_counter() - tick, images_per_step)
        acc.log({"loss": loss, "lr": run.lr_scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                 "img_per_s": summary.last_rate}, step=step)
        bar.update(1)
        bar.set_postfix(loss=f"{summary.smoothed_loss:.4f}", img_s=f"{summary.last_rate:.2f}")
        if step % cfg.checkpointing_steps == 0 or step == cfg.max_train_steps:
            state = {"loss": summary.smoothed_loss, "loss_history": summary.loss_history, "best_pck": run.best_pck}
            save_checkpoint(acc, run.out / "checkpoints", step, state, cfg.checkpoints_total_limit)
        if step % cfg.validation_steps == 0 and step != cfg.max_train_steps and acc.is_main_process:
            validate(run, step)
    bar.close()
