"""GAN losses and regularisers as pure functions of logits and images: non-saturating, hinge and Wasserstein
losses, the R1 penalty (Mescheder et al. 2018) and the WGAN-GP gradient penalty (Gulrajani et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

LossKind = Literal["ns", "hinge", "wgan"]


def d_loss(kind: LossKind, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss from its logits (B,) on real and generated images."""
    if kind == "ns":  # -log D(x) - log(1 - D(G(z)))
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "wgan":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def g_loss(kind: LossKind, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss from the discriminator's logits (B,) on its images."""
    if kind == "ns":  # -log D(G(z)): strong gradients while D wins
        return F.softplus(-fake).mean()
    if kind in ("hinge", "wgan"):
        return -fake.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient norm of D on real images, E ||grad_x D(x)||^2 (multiply by gamma / 2).

    `real_images` must require grad and `real_logits` be computed from them."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *,
                     generator: torch.Generator) -> torch.Tensor:
    """E (||grad D(x_hat)|| - 1)^2 on random interpolates x_hat of real and generated images (B, C, H, W)."""
    mix = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device, real.dtype)
    x_hat = (mix * real.detach() + (1 - mix) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.float().flatten(1).norm(dim=1) - 1).pow(2).mean()
