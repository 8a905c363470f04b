"""Structure prompts: presets of positive and negative anatomy terms, pose-to-text, token budgets, compel
embeddings and training-caption templates. Light to import: compel and transformers load on first use."""

from toolkit.prompts.build import PromptPair, build_prompts, count_tokens
from toolkit.prompts.captions import CaptionConfig, make_caption
from toolkit.prompts.pose_text import PoseAttributes, describe_pose, pose_phrase
from toolkit.prompts.presets import BUILTIN, DEFAULT_PRESET, Preset, compose, load_presets

__all__ = ["BUILTIN", "DEFAULT_PRESET", "CaptionConfig", "PoseAttributes", "Preset", "PromptPair", "build_prompts",
           "compose", "count_tokens", "describe_pose", "load_presets", "make_caption", "pose_phrase"]
