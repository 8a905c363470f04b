"""`python -m toolkit.sample gan`: images from a train_gan.py generator, unconditional or from given poses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.config import option, with_defaults
from toolkit.data.folders import read_poses
from toolkit.errors import UserError
from toolkit.gan.models import Generator
from toolkit.gan.outputs import generate
from toolkit.sampling import ImageSampleConfig, save_samples


@dataclass
@with_defaults(batch_size=64, help={
    "output_dir": "where to write images and grid.png (default: GENERATOR/generated)",
    "seed": "random seed of the latents; the same seed gives the same images"})
class GANSampleConfig(ImageSampleConfig):
    """Options of `python -m toolkit.sample gan`: --generator is a train_gan.py output's generator/ folder."""

    generator: str = option("runs/gan-figures/generator", "the generator folder (config.json and safetensors)")


def load_generator(path: str) -> Generator:
    """Generator.from_pretrained(path), with a clear error when it is not a saved generator."""
    if not (Path(path) / "config.json").is_file():
        raise UserError(f"{path} is not a saved generator (no config.json): pass a train_gan.py run's generator/")
    try:
        return Generator.from_pretrained(path)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        raise UserError(f"{path}: cannot load the generator: {e}") from None


def sample_gan(cfg: GANSampleConfig) -> str:
    """Load the generator, generate (from poses when it is pose-conditioned), save images and a grid; a status."""
    gen = load_generator(cfg.generator)
    if gen.config.pose != (cfg.poses is not None):
        need = "pose-conditioned: pass --poses" if gen.config.pose else "unconditional: drop --poses"
        raise UserError(f"{cfg.generator} is {need}")
    names, maps = read_poses(cfg.poses, gen.config.resolution, cfg.num_images) if cfg.poses else (None, None)
    images = generate(gen, len(names) if names else cfg.num_images, seed=cfg.seed, maps=maps,
                      batch_size=cfg.batch_size)  # (N, R, R, 3) uint8
    return save_samples(images, names, Path(cfg.output_dir or Path(cfg.generator) / "generated"))
