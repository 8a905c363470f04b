"""Structure prompt presets: named positive and negative terms grouped by body region, composable, extendable by YAML.

A preset is a few terms for one region (body, limbs, hands, face, feet, framing) or for general quality, with a
priority: when a prompt has to be shortened to fit the text encoder, the lowest-priority terms go first and every
dropped term is named. Presets may include others; `anatomy` is the default that validation and sampling use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.config import ConfigError, from_dict, load_yaml

REGIONS = ("body", "limbs", "hands", "face", "feet", "framing", "quality")
DEFAULT_PRESET = "anatomy"


@dataclass(frozen=True)
class Preset:
    """Terms for one region; `include` names other presets whose terms come first. Higher priority is kept longer."""

    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    region: str = "body"
    priority: int = 3
    include: list[str] = field(default_factory=list)
    description: str = ""

    def __post_init__(self):
        if self.region not in REGIONS:
            raise ConfigError(f"region: expected one of {', '.join(REGIONS)}, got {self.region!r}")


@dataclass(frozen=True)
class Term:
    """One prompt term with the preset it came from, its region and priority (for budget trimming)."""

    text: str
    preset: str
    region: str
    priority: int

    @property
    def structure(self) -> bool:
        """Whether the term is about anatomy or framing (not general quality)."""
        return self.region != "quality"


BUILTIN: dict[str, Preset] = {
    "body": Preset(["correct anatomy", "natural proportions"],
                   ["bad anatomy", "deformed body", "extra limbs", "missing limbs", "long neck"],
                   "body", 5, description="whole-body anatomy"),
    "limbs": Preset(["well-proportioned limbs"],
                    ["extra arms", "extra legs", "broken limbs", "dislocated joints"], "limbs", 5,
                    description="arms and legs: count, length, joints"),
    "hands": Preset(["detailed hands"], ["extra fingers", "missing fingers", "fused fingers", "malformed hands"],
                    "hands", 4, description="hands and fingers"),
    "face": Preset(["symmetrical face"], ["deformed face", "asymmetric eyes", "cross-eyed"], "face", 3,
                   description="face and eyes"),
    "feet": Preset(["detailed feet"], ["extra toes", "malformed feet"], "feet", 3, description="feet and toes"),
    "full_body": Preset(["full body", "whole body in frame"], ["cropped body", "out of frame", "cut off feet"],
                        "framing", 4, description="keep the whole figure in the picture"),
    "quality": Preset(["high quality", "sharp focus"],
                      ["worst quality", "low quality", "blurry", "watermark"], "quality", 1,
                      description="general image quality"),
    "anatomy": Preset(include=["body", "limbs", "hands", "face", "feet", "quality"],
                      description="the default: every region plus quality"),
}


def normalise(term: str) -> str:
    """The key two terms are duplicates by: weights and brackets removed, lower case, single spaces."""
    bare = re.sub(r":[\d.]+\)", ")", term)
    return " ".join(re.sub(r"[()\[\]]|[+-]+$", "", bare).lower().split())


def load_presets(path: str | Path) -> dict[str, Preset]:
    """User presets from a YAML mapping of name: {positive, negative, region, priority, include, description};
    unknown keys and wrong types are errors naming the file and the key."""
    data = load_yaml(path)
    presets = {}
    for name, spec in data.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: {name}: expected a mapping (positive, negative, region, ...), got {spec!r}")
        try:
            presets[str(name)] = from_dict(Preset, spec, prefix=f"{name}.")
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return presets


def available(extra: dict[str, Preset] | None = None) -> dict[str, Preset]:
    """Built-in presets updated with user ones (a user preset may replace a built-in of the same name)."""
    return {**BUILTIN, **(extra or {})}


def _expand(name: str, presets: dict[str, Preset], seen: tuple[str, ...]) -> list[tuple[str, Preset]]:
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(presets))}")
    if name in seen:
        raise ConfigError(f"preset {name!r} includes itself: {' -> '.join((*seen, name))}")
    preset = presets[name]
    out = [item for inner in preset.include for item in _expand(inner, presets, (*seen, name))]
    return out + [(name, preset)]


def compose(names: list[str], extra: dict[str, Preset] | None = None) -> tuple[list[Term], list[Term]]:
    """The positive and negative terms of the named presets (includes expanded), in order, without duplicates."""
    presets = available(extra)
    positive: dict[str, Term] = {}
    negative: dict[str, Term] = {}
    for name in names:
        for source, preset in _expand(name, presets, ()):
            for texts, out in ((preset.positive, positive), (preset.negative, negative)):
                for text in texts:
                    out.setdefault(normalise(text), Term(text.strip(), source, preset.region, preset.priority))
    return list(positive.values()), list(negative.values())
