"""Loss targets, min-SNR weights and offset noise against closed forms."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from toolkit.training.losses import sample_noise, snr_weights, training_target, weighted_mse


def scheduler(kind):
    return DDPMScheduler(num_train_timesteps=1000, prediction_type=kind)


def closed_form_snr(sched, t):
    abar = sched.alphas_cumprod[t]
    return abar / (1 - abar)


def test_targets():
    x0, noise, t = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4), torch.tensor([0, 500, 999])
    assert torch.equal(training_target(scheduler("epsilon"), x0, noise, t), noise)
    assert torch.equal(training_target(scheduler("sample"), x0, noise, t), x0)
    sched = scheduler("v_prediction")
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = abar.sqrt() * noise - (1 - abar).sqrt() * x0  # v = alpha_t * eps - sigma_t * x0
    assert torch.allclose(training_target(sched, x0, noise, t), expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weights(kind):
    sched, t, gamma = scheduler(kind), torch.tensor([1, 100, 400, 900]), 5.0
    snr = closed_form_snr(sched, t)
    clipped = torch.minimum(snr, torch.tensor(gamma))
    expected = {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[kind]
    assert torch.allclose(snr_weights(sched, t, gamma), expected, rtol=1e-4)
    assert torch.equal(snr_weights(sched, t, None), torch.ones(4))


def test_edm_weights_v_prediction_error_as_snr_plus_4_times_the_denoised_error():
    sched, t = scheduler("v_prediction"), torch.tensor([1, 100, 400, 900, 999])
    torch.manual_seed(0)
    x0, noise, v_pred = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    noisy = sched.add_noise(x0, noise, t)
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    x0_pred = abar.sqrt() * noisy - (1 - abar).sqrt() * v_pred  # the denoised image the v-prediction implies
    weights = snr_weights(sched, t, None, edm_sigma_data=0.5)
    v_err = ((v_pred - training_target(sched, x0, noise, t)) ** 2).mean(dim=(1, 2, 3))
    x0_err = ((x0_pred - x0) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(weights * v_err, (closed_form_snr(sched, t) + 4) * x0_err, rtol=1e-3)
    # between 1 (no noise) and 4 (pure noise): more weight where the layout is decided
    assert weights[0] == pytest.approx(1, abs=0.01) and weights[-1] == pytest.approx(4, abs=0.01)


@pytest.mark.parametrize("kind", ["epsilon", "sample"])
def test_edm_weights_are_refused_where_they_are_unbounded(kind):
    with pytest.raises(ValueError, match="needs v-prediction"):
        snr_weights(scheduler(kind), torch.tensor([1, 999]), None, edm_sigma_data=0.5)


def test_min_snr_epsilon_weights_are_one_at_high_noise():
    sched = scheduler("epsilon")
    t = torch.tensor([900, 999])  # SNR < 5 there
    assert torch.allclose(snr_weights(sched, t, 5.0), torch.ones(2))


def test_weighted_mse():
    pred, target = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    target[1] *= 2  # per-sample MSE: 1 and 4
    assert weighted_mse(pred, target, torch.tensor([1.0, 0.5])).item() == pytest.approx((1 + 2) / 2)
    pixel = torch.zeros(2, 1, 2, 2)
    pixel[..., 0, 0] = 4.0
    assert weighted_mse(pred, target, torch.ones(2), pixel).item() == pytest.approx((1 + 4) / 2)


def test_noise_offset_adds_a_per_channel_constant():
    g = torch.Generator().manual_seed(0)
    plain = sample_noise(torch.Size((2, 3, 8, 8)), 0.0, torch.Generator().manual_seed(0))
    offset = sample_noise(torch.Size((2, 3, 8, 8)), 0.1, g)
    diff = offset - plain
    assert torch.allclose(diff, diff[..., :1, :1].expand_as(diff))  # constant over H, W
    assert diff.abs().max() > 0
