"""Assemble a prompt pair from the user's text, a pose phrase and presets, within the text encoder's token budget.

CLIP encodes 77 tokens, 75 of them text. Counting uses the pipeline's own tokenizer on the text as the encoder will
see it (compel's weighting syntax removed). A pair that is too long is either encoded in 77-token chunks (compel's
long-prompt mode; the default) or shortened by dropping preset terms, lowest priority first; the user's own text
and the pose phrase are never dropped, and every dropped term is named in a warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

from toolkit.prompts.presets import DEFAULT_PRESET, Preset, Term, compose, normalise
from toolkit.prompts.syntax import plain_text

logger = logging.getLogger(__name__)
Overflow = Literal["chunk", "drop"]


@dataclass
class PromptPair:
    """A positive and a negative prompt with their token counts (text tokens, no start/end) and what was dropped."""

    positive: str
    negative: str
    positive_tokens: int | None = None
    negative_tokens: int | None = None
    budget: int | None = None
    dropped: list[Term] = field(default_factory=list)

    @property
    def chunks(self) -> int:
        """How many 77-token windows the longer prompt needs (1 when it fits or nothing was counted)."""
        if self.budget is None:
            return 1
        return max(1, math.ceil(max(self.positive_tokens or 0, self.negative_tokens or 0) / self.budget))


def count_tokens(tokenizer, prompt: str) -> int:
    """Text tokens of `prompt` (start and end tokens not counted) under `tokenizer`, weighting syntax removed."""
    return len(tokenizer(plain_text(prompt), add_special_tokens=False, truncation=False, verbose=False).input_ids)


def _join(parts: list[str]) -> str:
    return ", ".join(p.strip().strip(",").strip() for p in parts if p and p.strip().strip(","))


def _assemble(fixed: list[str], terms: list[Term]) -> str:
    present = {normalise(t) for part in fixed for t in part.split(",")}
    return _join(fixed + [t.text for t in terms if normalise(t.text) not in present])


def _trim(tokenizer, fixed: list[str], terms: list[Term], budget: int) -> tuple[list[Term], list[Term]]:
    """Drop terms, lowest priority and last first, until the assembled prompt fits `budget` tokens."""
    kept, dropped = list(terms), []
    order = sorted(range(len(terms)), key=lambda i: (terms[i].priority, -i))
    for i in order:
        if count_tokens(tokenizer, _assemble(fixed, kept)) <= budget:
            break
        kept.remove(terms[i])
        dropped.append(terms[i])
    return kept, dropped


def _warn_dropped(dropped: list[Term], budget: int) -> None:
    structure = [t for t in dropped if t.structure]
    quality = [t for t in dropped if not t.structure]
    named = lambda ts: ", ".join(f"'{t.text}' ({t.preset})" for t in ts)  # noqa: E731
    if quality:
        logger.warning("prompt over %d tokens: dropped quality terms %s", budget, named(quality))
    if structure:
        logger.warning("prompt over %d tokens: dropped STRUCTURE terms %s; use on_overflow='chunk' to keep them",
                       budget, named(structure))


def build_prompts(prompt: str = "", negative_prompt: str = "", presets: list[str] | tuple[str, ...] = (DEFAULT_PRESET,),
                  *, pose_text: str = "", tokenizer=None, on_overflow: Overflow = "chunk",
                  extra_presets: dict[str, Preset] | None = None) -> PromptPair:
    """The positive prompt (user text, pose phrase, preset terms) and the negative one (user text, preset terms);
    with a tokenizer, counted and fitted to its budget by chunking or by dropping preset terms."""
    positive_terms, negative_terms = compose(list(presets), extra_presets)
    pos_fixed, neg_fixed = [prompt, pose_text], [negative_prompt]
    if tokenizer is None:
        return PromptPair(_assemble(pos_fixed, positive_terms), _assemble(neg_fixed, negative_terms))
    budget = tokenizer.model_max_length - 2
    dropped: list[Term] = []
    if on_overflow == "drop":
        positive_terms, lost_pos = _trim(tokenizer, pos_fixed, positive_terms, budget)
        negative_terms, lost_neg = _trim(tokenizer, neg_fixed, negative_terms, budget)
        dropped = lost_pos + lost_neg
        _warn_dropped(dropped, budget)
    elif on_overflow != "chunk":
        raise ValueError(f"on_overflow: expected 'chunk' or 'drop', got {on_overflow!r}")
    positive, negative = _assemble(pos_fixed, positive_terms), _assemble(neg_fixed, negative_terms)
    pair = PromptPair(positive, negative, count_tokens(tokenizer, positive), count_tokens(tokenizer, negative),
                      budget, dropped)
    if pair.chunks > 1:
        logger.info("prompt of %d/%d tokens is encoded in %d chunks of 77", pair.positive_tokens,
                    pair.negative_tokens, pair.chunks)
    return pair
