"""The GAN baselines' networks, losses and augmentation: shapes, conditioning, penalties, reproducibility."""

from __future__ import annotations

import pytest
import torch

from toolkit.config import ConfigError
from toolkit.gan.augment import diff_augment
from toolkit.gan.losses import d_loss, g_loss, gradient_penalty, r1_penalty
from toolkit.gan.models import Discriminator, GANArch, Generator


def arch(kind: str, resolution: int = 16, pose: bool = False) -> dict:
    return GANArch(kind=kind, resolution=resolution, z_dim=8, channels=4, pose=pose).to_json()


@pytest.mark.parametrize("kind", ["dcgan", "resnet"])
@pytest.mark.parametrize("resolution", [16, 32, 24, 40])  # 4, 3 and 5 times a power of two
@pytest.mark.parametrize("pose", [False, True])
def test_networks_map_latents_to_images_and_images_to_logits(kind, resolution, pose):
    torch.manual_seed(0)
    a = arch(kind, resolution, pose)
    maps = torch.rand(3, 3, resolution, resolution) * 2 - 1 if pose else None
    images = Generator(**a)(torch.randn(3, 8), maps)
    assert images.shape == (3, 3, resolution, resolution)
    assert images.abs().max() <= 1 and torch.isfinite(images).all()
    logits = Discriminator(**a)(images, maps)
    assert logits.shape == (3,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", ["dcgan", "resnet"])
def test_the_pose_generator_follows_its_map_and_refuses_to_go_without(kind):
    torch.manual_seed(0)
    gen = Generator(**arch(kind, pose=True)).eval()
    z = torch.randn(2, 8)
    a, b = -torch.ones(2, 3, 16, 16), -torch.ones(2, 3, 16, 16)
    b[:, 0, 4:12, 7:9] = 1.0  # a red stick
    assert not torch.allclose(gen(z, a), gen(z, b))
    with pytest.raises(ValueError, match="needs pose maps"):
        gen(z)
    with pytest.raises(ValueError, match="takes none"):
        Generator(**arch(kind)).eval()(z, a)


def test_arch_is_validated_on_creation():
    shapes = [(GANArch(resolution=r).base, GANArch(resolution=r).levels) for r in (64, 48, 80)]
    assert shapes == [(4, 4), (3, 4), (5, 4)]
    for resolution in (56, 36, 12):
        with pytest.raises(ConfigError, match="power of two"):
            GANArch(resolution=resolution)
    with pytest.raises(ConfigError, match="kind"):
        GANArch(kind="stylegan")


def test_losses_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-1.0, 0.0])
    assert d_loss("hinge", real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert d_loss("wgan", real, fake).item() == pytest.approx(-0.5 - 1.25)
    assert g_loss("hinge", fake).item() == pytest.approx(0.5)
    ns = d_loss("ns", real, fake).item()
    expected = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    assert ns == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        g_loss("lsgan", fake)


@pytest.mark.parametrize("kind", ["dcgan", "resnet"])
def test_r1_and_gradient_penalty_are_finite_nonzero_and_differentiable(kind):
    torch.manual_seed(0)
    disc = Discriminator(**arch(kind))
    real = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    fake = torch.rand(4, 3, 16, 16) * 2 - 1
    r1 = r1_penalty(disc(real), real)
    gp = gradient_penalty(disc, real, fake, generator=torch.Generator().manual_seed(0))
    for penalty in (r1, gp):
        assert torch.isfinite(penalty) and penalty.item() > 0
    (r1 + gp).backward()  # the penalties train D: second-order gradients reach its weights (not the biases,
    weights = [p for name, p in disc.named_parameters() if "bias" not in name]  # which do not move dD/dx)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


def test_diff_augment_is_reproducible_differentiable_and_moves_the_map_with_the_image():
    images = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    policy = ("color", "translation", "cutout")
    a, _ = diff_augment(images, policy, generator=torch.Generator().manual_seed(1))
    b, _ = diff_augment(images, policy, generator=torch.Generator().manual_seed(1))
    c, _ = diff_augment(images, policy, generator=torch.Generator().manual_seed(2))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    maps = (torch.rand(4, 3, 16, 16) * 2 - 1)
    moved, moved_map = diff_augment(maps.clone(), ("translation",), generator=torch.Generator().manual_seed(3),
                                    pose_map=maps.clone())
    inside = moved_map != -1  # where the map was not padded, it shifted exactly as the image did
    assert torch.equal(moved[inside], moved_map[inside])
    with pytest.raises(ValueError, match="unknown augmentation"):
        diff_augment(images, ("rotate",), generator=torch.Generator())


def test_a_saved_generator_reloads_from_its_folder_and_reproduces_its_samples(tmp_path):
    torch.manual_seed(0)
    gen = Generator(**arch("resnet", pose=True)).eval()
    z, maps = torch.randn(2, 8), torch.rand(2, 3, 16, 16) * 2 - 1
    gen.save_pretrained(tmp_path / "generator")
    assert (tmp_path / "generator" / "diffusion_pytorch_model.safetensors").is_file()
    again = Generator.from_pretrained(tmp_path / "generator").eval()
    assert again.config.pose and again.config.resolution == 16
    assert torch.equal(gen(z, maps), again(z, maps))


def test_the_averaged_generator_has_standing_statistics_and_gives_its_own_back():
    from diffusers.training_utils import EMAModel

    from toolkit.gan.outputs import STANDING_LATENTS, averaged

    torch.manual_seed(0)
    gen = Generator(**arch("resnet"))
    with torch.no_grad():
        gen(torch.randn(4, 8) * 3)  # training statistics of other inputs
    ema = EMAModel(gen.parameters(), model_cls=Generator, model_config=gen.config)
    for shadow in ema.shadow_params:
        shadow.mul_(0.5)  # the average differs from the live weights
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    with averaged(gen, ema) as sampled:
        assert all(torch.equal(p, s) for p, s in zip(sampled.parameters(), ema.shadow_params, strict=True))
        z = torch.randn(STANDING_LATENTS, 8, generator=torch.Generator().manual_seed(0))
        first = sampled.blocks[0].main[0]  # the first batch norm sees the projected latents
        with torch.no_grad():
            expected = sampled.project(z).view(STANDING_LATENTS, -1, 4, 4).mean(dim=(0, 2, 3))
        assert torch.allclose(first.running_mean, expected, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in gen.state_dict().items())  # weights and statistics back
