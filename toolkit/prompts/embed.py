"""Prompt embeddings for the Stable Diffusion pipelines through compel: weighting syntax and long prompts.

Prompts may use A1111 weights (`(term:1.3)`, `(term)`, `[term]`, rewritten by `syntax.to_compel`) or compel's own
(`(term)1.3`, `term++`, `.and()`, `.blend()`); compel parses and weights them, and with `truncate_long_prompts=False` it encodes
a prompt of any length as consecutive 77-token windows. Positive and negative embeddings are padded to the same
length, as the pipelines require when both are given.
"""

from __future__ import annotations

import torch

from toolkit.prompts.syntax import to_compel


def encode_prompts(tokenizer, text_encoder, prompts: list[str], negative_prompts: list[str] | None = None, *,
                   long_prompts: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """prompt_embeds (B, 77 * chunks, D) and negative_prompt_embeds of the same shape (None when no negatives);
    pass them to a diffusers pipeline as `prompt_embeds=` and `negative_prompt_embeds=`."""
    from compel import Compel  # imported here: compel pulls in the diffusers pipelines (seconds)

    if negative_prompts is not None and len(negative_prompts) not in (1, len(prompts)):
        raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts: give 1 or as many")
    compel = Compel(tokenizer=tokenizer, text_encoder=text_encoder, truncate_long_prompts=not long_prompts)
    texts = [to_compel(t) for t in list(prompts) + list(negative_prompts or [])]
    with torch.no_grad():
        embeds = compel(texts)  # (len(texts), 77 * chunks, D), padded to the longest
    positive, negative = embeds[: len(prompts)], embeds[len(prompts):]
    if negative_prompts is None:
        return positive, None
    if len(negative_prompts) == 1:
        negative = negative.expand(len(prompts), -1, -1)
    return positive, negative
