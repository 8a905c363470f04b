"""Diffusion training losses: noise, targets per prediction type, min-SNR, EDM and pose weights, and the loss of a batch
that every diffusion trainer computes (pure functions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr


def sample_noise(shape: torch.Size, noise_offset: float, generator: torch.Generator, device=None) -> torch.Tensor:
    """Gaussian noise (B, C, H, W); with `noise_offset`, plus a per-channel constant (offset noise)."""
    noise = torch.randn(shape, generator=generator).to(device)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(shape[:2] + (1, 1), generator=generator).to(device)
    return noise


def training_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the model should predict under `scheduler.config.prediction_type`: noise, velocity or x0."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    if kind == "sample":
        return x0
    raise ValueError(f"unknown prediction_type {kind!r}")


def snr_weights(scheduler, timesteps: torch.Tensor, snr_gamma: float | None, *,
                edm_sigma_data: float | None = None) -> torch.Tensor:
    """Per-sample loss weights (B,): ones, min-SNR-gamma (Hang et al. 2023) or EDM's (Karras et al. 2022), expressed
    for the prediction type.

    Each is a weight on the x0-space error, divided by the weight that the prediction type's own loss puts there
    (SNR for eps, SNR + 1 for v, 1 for x0): min-SNR weights the x0 error by min(SNR, gamma), EDM by
    SNR + 1 / sigma_data^2, which is at least 1 / sigma_data^2 at the high noise levels that decide the layout. EDM's
    weight is bounded only for v-prediction (1 to 1 / sigma_data^2 in v's own terms); for eps or x0 it grows without
    limit at one end of the schedule, so it is refused there.
    """
    if snr_gamma is None and edm_sigma_data is None:
        return torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
    snr = compute_snr(scheduler, timesteps).float()
    kind = scheduler.config.prediction_type
    if edm_sigma_data is not None and kind != "v_prediction":  # without EDM's preconditioning, unbounded weights
        raise ValueError(f"EDM loss weighting needs v-prediction (its weight is within [1, 1/sigma_data^2] only "
                         f"there), got {kind!r}")
    x0_weight = snr + edm_sigma_data ** -2 if edm_sigma_data is not None else torch.clamp(snr, max=snr_gamma)
    if kind == "epsilon":
        return x0_weight / snr
    if kind == "v_prediction":
        return x0_weight / (snr + 1)
    return x0_weight


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                 pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of weights[b] x mean squared error of sample b (optionally pixel-weighted), in fp32."""
    err = (pred.float() - target.float()) ** 2  # (B, C, H, W)
    if pixel_weights is not None:
        err = err * pixel_weights
    return (err.mean(dim=list(range(1, err.ndim))) * weights).mean()


def limb_mask(pose_maps: torch.Tensor, size: tuple[int, int], dilate: int = 1) -> torch.Tensor:
    """Where the skeleton is drawn in OpenPose maps (B, 3, H, W) in [-1, 1], as a {0, 1} mask (B, 1, *size).

    At a coarser `size` (a VAE latent) a cell is inside if any pixel under it is; `dilate` cells are then added
    around the sticks so that the mask covers the limbs' width, not just the skeleton's lines.
    """
    drawn = (pose_maps.float().amax(dim=1, keepdim=True) > -0.8).float()  # any channel above ~25 / 255
    mask = F.adaptive_max_pool2d(drawn, size)  # (B, 1, H, W) -> (B, 1, h, w)
    if dilate:
        mask = F.max_pool2d(mask, 2 * dilate + 1, stride=1, padding=dilate)
    return mask


def pose_pixel_weights(pose_maps: torch.Tensor, size: tuple[int, int], weight: float) -> torch.Tensor:
    """Pose-weighted loss weights 1 + weight x limb mask, (B, 1, *size), for weighted_mse's pixel_weights."""
    return 1.0 + weight * limb_mask(pose_maps, size)


def predicted_x0(scheduler, noisy: torch.Tensor, pred: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The clean sample (B, C, H, W) that the model's output implies under its prediction type, in fp32."""
    kind = scheduler.config.prediction_type
    alpha_bar = scheduler.alphas_cumprod.to(noisy.device)[timesteps].float().view(-1, 1, 1, 1)
    noisy, pred = noisy.float(), pred.float()
    if kind == "epsilon":
        return (noisy - (1 - alpha_bar).sqrt() * pred) / alpha_bar.sqrt()
    if kind == "v_prediction":
        return alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * pred
    if kind == "sample":
        return pred
    raise ValueError(f"unknown prediction_type {kind!r}")


def ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - SSIM (pytorch-msssim, Gaussian window of 11, or the largest odd size that fits) of images (B, 3, H, W) in
    [-1, 1]: (B,), 0 for identical images."""
    from pytorch_msssim import ssim

    window = min(11, min(x.shape[-2:]) - (1 - min(x.shape[-2:]) % 2))  # odd, at most the image
    return 1 - ssim(x.float(), y.float(), data_range=2.0, size_average=False, win_size=window)


@dataclass
class StructureLoss:
    """The auxiliary losses on the predicted clean image, weighted per sample toward low noise levels: SSIM and
    LPIPS (`lpips`: a `toolkit.metrics.lpips.LPIPS`, frozen), each times its weight."""

    ssim_weight: float = 0.0
    lpips_weight: float = 0.0
    lpips: torch.nn.Module | None = None

    def __call__(self, x0_hat: torch.Tensor, x0: torch.Tensor, timestep_weights: torch.Tensor) -> torch.Tensor:
        """mean_b(w_b x (ssim_weight x (1 - SSIM_b) + lpips_weight x LPIPS_b)), w_b the timestep weights (B,)."""
        total = torch.zeros(x0.shape[0], device=x0.device)
        if self.ssim_weight:
            total = total + self.ssim_weight * ssim_distance(x0_hat, x0)
        if self.lpips_weight:
            total = total + self.lpips_weight * self.lpips(x0_hat.float(), x0.float())
        return (total * timestep_weights).mean()


def structure_weights(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Per-sample weights (B,) of the structure losses: alpha_bar_t = SNR / (SNR + 1), near 1 at low noise, where the
    predicted x0 is sharp enough to judge, and near 0 at high noise, where it is a blur whatever the model does."""
    return scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()


def diffusion_loss(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler, x0: torch.Tensor, *,
                   generator: torch.Generator, noise_offset: float = 0.0, snr_gamma: float | None = None,
                   edm_sigma_data: float | None = None, pose_maps: torch.Tensor | None = None,
                   pose_loss_weight: float = 0.0, structure: StructureLoss | None = None) -> torch.Tensor:
    """The denoising loss of clean samples x0 (B, C, H, W), pixels or latents: noise them at random timesteps, ask
    `model(noisy, timesteps)` for the scheduler's prediction type, and take the (min-SNR or EDM, pose-)weighted MSE,
    plus the `structure` losses on the implied clean image (pixels only).

    Draws from `generator` in a fixed order (noise, then timesteps), so a seeded step is reproducible. `pose_maps`
    (B, 3, H', W') in [-1, 1] weight the loss inside the limbs by 1 + pose_loss_weight, pooled to x0's size.
    """
    noise = sample_noise(x0.shape, noise_offset, generator, x0.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator)
    timesteps = timesteps.to(x0.device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    pred = model(noisy, timesteps)
    target = training_target(scheduler, x0, noise, timesteps)
    weights = pose_pixel_weights(pose_maps, x0.shape[-2:], pose_loss_weight) if pose_loss_weight else None
    loss = weighted_mse(pred, target, snr_weights(scheduler, timesteps, snr_gamma, edm_sigma_data=edm_sigma_data),
                        weights)
    if structure is not None and (structure.ssim_weight or structure.lpips_weight):
        loss = loss + structure(predicted_x0(scheduler, noisy, pred, timesteps), x0,
                                structure_weights(scheduler, timesteps))
    return loss
