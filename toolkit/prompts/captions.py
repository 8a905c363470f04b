"""Training captions: a template over the image's caption and its pose phrase, caption dropout, tag shuffling.

Templates use `{caption}` and `{pose_text}` (and any field given to `render`); parts left empty are removed with
their commas. Tag shuffling (as kohya's `--shuffle_caption` with `--keep_tokens`) reorders comma-separated tags after
the first `keep_tags`, so that the trigger word and the pose phrase can stay in front.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from toolkit.config import ConfigError

FIELDS = ("caption", "pose_text")


@dataclass(frozen=True)
class CaptionConfig:
    """How a training caption is made; validated on creation."""

    template: str = "{caption}, {pose_text}"
    dropout: float = 0.0  # probability of an empty caption (the unconditional branch for classifier-free guidance)
    shuffle_tags: bool = False
    keep_tags: int = 1

    def __post_init__(self):
        names = {name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None}
        unknown = sorted(names - set(FIELDS))
        if unknown:
            raise ConfigError(f"caption_template: unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; "
                              f"use {', '.join('{' + f + '}' for f in FIELDS)}")
        if not 0.0 <= self.dropout <= 1.0:
            raise ConfigError(f"proportion_empty_prompts: expected a value in [0, 1], got {self.dropout}")
        if self.keep_tags < 0:
            raise ConfigError(f"keep_tags: expected >= 0, got {self.keep_tags}")


def render(template: str, caption: str = "", pose_text: str = "") -> str:
    """Fill the template; empty parts and the separators around them disappear."""
    text = template.format(caption=caption.strip(), pose_text=pose_text.strip())
    return ", ".join(tag.strip() for tag in text.split(",") if tag.strip())


def shuffle_tags(text: str, keep: int, rng: random.Random) -> str:
    """Shuffle the comma-separated tags after the first `keep` ones."""
    tags = [t.strip() for t in text.split(",") if t.strip()]
    head, tail = tags[:keep], tags[keep:]
    rng.shuffle(tail)
    return ", ".join(head + tail)


def make_caption(config: CaptionConfig, caption: str, pose_text: str, rng: random.Random) -> str:
    """One training caption: dropped to "" with probability `dropout`, else the template, optionally shuffled."""
    if config.dropout and rng.random() < config.dropout:
        return ""
    text = render(config.template, caption, pose_text)
    return shuffle_tags(text, config.keep_tags, rng) if config.shuffle_tags else text
