"""Print structure prompts: presets plus the phrase for a pose, with token counts under the pipeline's tokenizer.

    python -m toolkit.prompts --pose keypoints.json --preset anatomy
    python -m toolkit.prompts --prompt "a dancer on a stage" --preset anatomy full_body --on_overflow drop
    python -m toolkit.prompts --list_presets --presets_file my_presets.yaml
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Literal

from toolkit.config import option, parse_config
from toolkit.errors import UserError, cli_errors


@dataclass
class PromptsConfig:
    """Options of `python -m toolkit.prompts`."""

    pose: str | None = option(None, "OpenPose JSON file: its most prominent person is described in words")
    preset: list[str] = option(["anatomy"], "presets to compose, in order (see --list_presets)")
    prompt: str = option("", "your own prompt text, placed first")
    negative_prompt: str = option("", "your own negative prompt text, placed first")
    presets_file: str | None = option(None, "YAML file of extra presets (name: {positive, negative, region, ...})")
    tokenizer: str | None = option(None, "tokenizer or pipeline folder to count with (default: the bundled SD 1.x "
                                         "CLIP tokenizer)")
    on_overflow: Literal["chunk", "drop"] = option("chunk", "over 75 tokens: encode in 77-token chunks, or drop "
                                                            "the lowest-priority preset terms (named in a warning)")
    list_presets: bool = option(False, "list the available presets and exit")


def _pose_text(path: str) -> str:
    from toolkit.pose.keypoints import load_pose
    from toolkit.prompts.pose_text import pose_phrase

    try:
        pose = load_pose(path, width=1, height=1)
    except (OSError, ValueError) as e:
        raise UserError(f"--pose: {e}") from None
    return pose_phrase([p.body for p in pose.people])


def _list(presets: dict) -> None:
    for name, p in presets.items():
        inner = f" (includes {', '.join(p.include)})" if p.include else ""
        print(f"{name:10s} {p.region:8s} priority {p.priority}  {p.description}{inner}")


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a message comes (never a stream that has since been closed)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _log_to_stderr(logger: logging.Logger) -> None:
    """The prompts' warnings (terms dropped to fit the token budget) as `WARNING: ...` lines, set up once; the
    global logging configuration is left alone."""
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Compose the prompts, count their tokens and print them."""
    from toolkit.prompts.build import build_prompts
    from toolkit.prompts.presets import available, load_presets
    from toolkit.prompts.tokenizer import load_tokenizer

    _log_to_stderr(logging.getLogger("toolkit.prompts"))
    cfg = parse_config(PromptsConfig, argv, description=__doc__.splitlines()[0])
    extra = load_presets(cfg.presets_file) if cfg.presets_file else None
    if cfg.list_presets:
        _list(available(extra))
        return 0
    pose_text = _pose_text(cfg.pose) if cfg.pose else ""
    pair = build_prompts(cfg.prompt, cfg.negative_prompt, cfg.preset, pose_text=pose_text,
                         tokenizer=load_tokenizer(cfg.tokenizer), on_overflow=cfg.on_overflow, extra_presets=extra)
    if cfg.pose:
        print(f"pose:     {pose_text or '(no person found)'}")
    print(f"positive ({pair.positive_tokens}/{pair.budget} tokens): {pair.positive}")
    print(f"negative ({pair.negative_tokens}/{pair.budget} tokens): {pair.negative}")
    if pair.chunks > 1:
        print(f"over budget: encode with toolkit.prompts.embed.encode_prompts ({pair.chunks} chunks of 77 tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
