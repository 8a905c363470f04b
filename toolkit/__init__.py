"""Anatomy toolkit: train diffusion models that get human structure right."""

__version__ = "0.1.0"
