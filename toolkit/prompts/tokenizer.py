"""The CLIP tokenizer: the one shipped with the toolkit (SD 1.x's, MIT) or a pipeline's own."""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import UserError

BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "clip_tokenizer"


def load_tokenizer(path: str | Path | None = None):
    """A CLIPTokenizer from a tokenizer folder, a pipeline folder (its `tokenizer/`), or the bundled SD 1.x one."""
    from transformers import CLIPTokenizer

    folder = Path(path) if path is not None else BUNDLED
    if (folder / "tokenizer").is_dir():
        folder = folder / "tokenizer"
    if not (folder / "vocab.json").is_file():
        raise UserError(f"{folder}: no CLIP tokenizer here (vocab.json missing)")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    if tokenizer.model_max_length > 1_000_000:  # a tokenizer saved without a config has no real limit
        tokenizer.model_max_length = 77
    return tokenizer
