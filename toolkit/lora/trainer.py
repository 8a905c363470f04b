"""The pose-LoRA trainer, for the shared loop: cached latents and captions -> noise -> frozen ControlNet residuals ->
UNet with LoRA -> (pose-weighted) loss; AdamW on the adapters only.

It supplies the models with their adapters, the example indices of each step, the loss, validation with pose
scores, and the LoRA files with their reload check. Everything else is `toolkit.training.loop`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from toolkit.data.dataset import batch_indices
from toolkit.hub import CardInfo
from toolkit.lora.batches import build_caches, make_batch
from toolkit.lora.config import PoseLoraConfig
from toolkit.lora.data import open_data
from toolkit.lora.finish import LoraSummary, card_info, finish
from toolkit.lora.models import add_adapters, enable_speedups, load_models, place
from toolkit.lora.outputs import (
    CONTROLNET_LORA_FILE,
    KOHYA_FILE,
    LORA_FILE,
    load_adapters,
    save_adapters,
    save_lora,
)
from toolkit.lora.validation import (
    Sampling,
    eval_set,
    generate,
    make_detector,
    make_pipeline,
    pose_scores,
    validation_grid,
    validation_set,
)
from toolkit.training.evaluation import EVAL_SEED_OFFSET, spread
from toolkit.training.loop import Phase, StepBatch, Trainer
from toolkit.training.losses import diffusion_loss
from toolkit.training.precision import weight_dtype
from toolkit.training.report import RunSummary, log_images
from toolkit.training.runs import make_lr_scheduler, make_optimizer, total_steps


class PoseLoraTrainer(Trainer):
    """Trains a LoRA on the SD UNet (and optionally the ControlNet) per a PoseLoraConfig."""

    name = "train_pose_lora"
    summary_class = LoraSummary
    upload_files = [LORA_FILE, KOHYA_FILE, CONTROLNET_LORA_FILE, "controlnet"]

    def __init__(self, cfg: PoseLoraConfig, accelerator: Accelerator) -> None:
        super().__init__(cfg, accelerator)
        self.weight_dtype = weight_dtype(accelerator.mixed_precision)
        self._build_models()
        self.data = open_data(cfg)
        self.data_name = cfg.train_data_dir or cfg.dataset_name
        self.total_steps = total_steps(cfg, len(self.data), accelerator.num_processes)
        self.solver_steps = cfg.num_inference_steps
        self.phases = [self._phase()]
        self.caches = build_caches(self.data, self.models, latents=cfg.cache_latents, texts=cfg.cache_text_embeddings,
                                   device=accelerator.device, dtype=self.weight_dtype)
        self.val = validation_set(cfg, self.data, self.models.tokenizer)
        self.detector = make_detector(accelerator.print) if cfg.score_poses and accelerator.is_main_process else None
        self.base_images: np.ndarray | None = None  # the base model's validation images: the same every time
        self.scores: dict = {}  # the latest validation's pose scores (lora and base)
        self.best_pck = -1.0
        self.eval_set = None  # the in-loop KID's poses and prompts, made at its first use

    def _build_models(self) -> None:
        """SD's components and the ControlNet, frozen in the low-precision dtype, with fp32 adapters."""
        cfg, acc = self.cfg, self.accelerator
        set_seed(cfg.seed)  # the LoRA initialisation (and a ControlNet made from the UNet): the same on resume
        if not cfg.controlnet_model_name_or_path and cfg.train_controlnet == "no":
            acc.print("no --controlnet_model_name_or_path: a ControlNet made from the UNet adds nothing until it is "
                      "trained (its zero convolutions output 0); pass --train_controlnet lora or full")
        self.models = load_models(cfg)
        self.params = add_adapters(self.models, cfg.adapter, train_controlnet=cfg.train_controlnet)
        place(self.models, acc.device, self.weight_dtype, full_controlnet=cfg.train_controlnet == "full")
        enable_speedups(self.models, acc.device, acc.print, gradient_checkpointing=cfg.gradient_checkpointing,
                        xformers=cfg.enable_xformers_memory_efficient_attention)
        acc.print(f"trainable parameters: {sum(p.numel() for p in self.params):,}")

    def _phase(self) -> Phase:
        """AdamW on the adapters with its schedule, prepared by Accelerate with the UNet (and a trained ControlNet)."""
        cfg, acc, models = self.cfg, self.accelerator, self.models
        optimizer = make_optimizer(self.params, cfg.adamw, eight_bit=cfg.use_8bit_adam, device=acc.device,
                                   say=acc.print)
        lr_scheduler = make_lr_scheduler(cfg, optimizer, self.total_steps, acc.num_processes)
        self.unet, optimizer, lr_scheduler = acc.prepare(models.unet, optimizer, lr_scheduler)
        self.controlnet = acc.prepare(models.controlnet) if cfg.train_controlnet != "no" else models.controlnet
        for module in (models.unet, models.controlnet):  # drop Accelerate's fp32-output wrapper: `loss` autocasts
            acc.unwrap_model(module, keep_fp32_wrapper=False)  # itself, and pipelines need same-dtype residuals
        synced = [self.unet] + ([self.controlnet] if cfg.train_controlnet != "no" else [])
        return Phase("lora", synced, self.params, optimizer, lr_scheduler)

    def batches(self, start_step: int) -> Iterator[StepBatch]:
        """The example indices of each micro-batch: this process's share of a seeded per-epoch permutation."""
        cfg, acc = self.cfg, self.accelerator
        accum, world = cfg.gradient_accumulation_steps, acc.num_processes
        for step in range(start_step, self.total_steps):
            numbers = [(step * accum + micro) * world + acc.process_index for micro in range(accum)]
            yield StepBatch([batch_indices(len(self.data), cfg.train_batch_size, cfg.seed, n) for n in numbers],
                            cfg.train_batch_size * accum * world)

    def loss(self, phase: Phase, micro_batch: list[int], generator: torch.Generator) -> torch.Tensor:
        """The (pose-weighted) diffusion loss of the examples `micro_batch` (unreadable ones replaced)."""
        cfg, device, dtype = self.cfg, self.accelerator.device, self.weight_dtype
        batch = make_batch(self.data, self.models, self.caches, micro_batch, generator, device=device, dtype=dtype)
        text, maps = batch.embeddings.to(dtype), batch.pose_maps.to(dtype)

        def predict(noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            noisy = noisy.to(dtype)
            with self.accelerator.autocast():
                down, mid = self.controlnet(noisy, timesteps, encoder_hidden_states=text, controlnet_cond=maps,
                                            return_dict=False)
                return self.unet(noisy, timesteps, encoder_hidden_states=text,
                                 down_block_additional_residuals=[d.to(dtype) for d in down],
                                 mid_block_additional_residual=mid.to(dtype)).sample  # (B, 4, h, w)

        # the limb mask of the pose map ([0, 1] as ControlNets take it; [-1, 1] here) weights the latent loss
        maps_pm1 = batch.pose_maps * 2 - 1 if cfg.pose_loss_weight else None
        return diffusion_loss(predict, self.models.noise_scheduler, batch.latents, generator=generator,
                              noise_offset=cfg.noise_offset, snr_gamma=cfg.snr_gamma,
                              edm_sigma_data=cfg.edm_sigma_data, pose_maps=maps_pm1,
                              pose_loss_weight=cfg.pose_loss_weight)

    def _adapters(self, enabled: bool) -> None:
        """Switch the LoRA adapters (UNet, and ControlNet when it carries some) on or off."""
        for model in (self.models.unet, self.models.controlnet):
            if getattr(model, "peft_config", None):
                model.enable_adapters() if enabled else model.disable_adapters()

    def validate(self, step: int, name: str | None = None) -> Path:
        """Base and LoRA images for the validation triples: the grid saved and logged, and their pose scores."""
        cfg, acc, sampling = self.cfg, self.accelerator, Sampling.of(self.cfg)
        pipe = make_pipeline(self.models, cfg.validation_scheduler)
        self.models.unet.eval()
        try:  # adapters and training mode come back also when sampling fails (out of memory)
            lora = generate(pipe, self.val, sampling)
            if self.base_images is None:
                self._adapters(False)
                self.base_images = generate(pipe, self.val, sampling)
        finally:
            self._adapters(True)
            self.models.unet.train()
        if self.detector is not None and "base" not in self.scores:
            self.scores["base"] = pose_scores(self.base_images, self.val.poses, self.detector)
        path = self.samples_path(step, name)
        grid = validation_grid(self.val, self.base_images, lora)
        grid.save(path)
        log_images(acc, np.asarray(grid)[None], step)
        if self.detector is not None:
            self.scores["lora"] = scores = pose_scores(lora, self.val.poses, self.detector)
            acc.log({f"pose/{k}": v for k, v in scores.items() if v is not None}, step=step)
            acc.print(f"step {step}: pose fidelity with LoRA {scores} (base {self.scores['base']})")
            pck = scores["pck@0.2_torso"] or 0.0
            if cfg.keep_best_pose_checkpoint and pck > self.best_pck:
                self.best_pck = pck
                save_lora(self.models.unet, self.out / "lora_best", cfg.adapter.alpha)
        return path

    def eval_images(self, count: int) -> np.ndarray:
        """Samples under `count` training poses (cycled), with LoRA, 8 at a time: (N, R, R, 3) uint8."""
        cfg = self.cfg
        if self.eval_set is None or len(self.eval_set.prompts) != count:
            self.eval_set = eval_set(cfg, self.data, self.models.tokenizer, count)
        pipe = make_pipeline(self.models, cfg.validation_scheduler)
        self.models.unet.eval()
        first = cfg.seed + EVAL_SEED_OFFSET  # image i from seed first + i: other seeds than the grid's
        chunks = [generate(pipe, self.eval_set.part(i, i + 8), replace(Sampling.of(cfg), seed=first + i))
                  for i in range(0, count, 8)]
        self.models.unet.train()
        return (np.concatenate(chunks) * 255).round().clip(0, 255).astype(np.uint8)

    def reference_images(self, count: int) -> list[np.ndarray]:
        """`count` training images spread over the set (unreadable ones left out), as cropped for training,
        (R, R, 3) uint8."""
        examples = (self.data.example(i) for i in spread(len(self.data), count))
        return [e.image.permute(1, 2, 0).numpy() for e in examples if e is not None]

    def save_weights(self, folder: Path) -> None:
        save_adapters(self.models, folder, alpha=self.cfg.adapter.alpha, controlnet_mode=self.cfg.train_controlnet)

    def load_weights(self, folder: Path) -> None:
        load_adapters(self.models, folder, controlnet_mode=self.cfg.train_controlnet)

    def save(self, summary: RunSummary) -> None:
        """Both LoRA files, checked by reloading them, and the ControlNet inference needs."""
        summary.pose_scores = dict(self.scores)
        finish(self.cfg, self.models, self.val, base_images=self.base_images, out=self.out, summary=summary)

    def model_card(self, summary: RunSummary) -> CardInfo:
        return card_info(self.cfg, summary)

    def state(self) -> dict:
        return {"best_pck": self.best_pck}

    def load_state(self, state: dict) -> None:
        self.best_pck = float(state.get("best_pck", -1.0))

    def skipped_files(self) -> list[str]:
        return self.data.skipped
