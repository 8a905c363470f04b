"""Structure prompts: presets, pose to text, token budgets with the real CLIP tokenizer, compel embeddings, captions."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from toolkit.config import ConfigError
from toolkit.figures.attributes import sample_labelled_pose
from toolkit.figures.render import render_labelled
from toolkit.prompts import (
    BUILTIN,
    CaptionConfig,
    build_prompts,
    compose,
    count_tokens,
    describe_pose,
    make_caption,
)
from toolkit.prompts.captions import render, shuffle_tags
from toolkit.prompts.embed import encode_prompts
from toolkit.prompts.pose_text import pose_phrase, score_attributes
from toolkit.prompts.presets import load_presets, normalise
from toolkit.prompts.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                            num_hidden_layers=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                            pad_token_id=49407)
    return CLIPTextModel(config).eval()


# presets -------------------------------------------------------------------------------------------------------------

def test_presets_compose_in_order_without_duplicates():
    positive, negative = compose(["anatomy", "hands", "full_body"])
    keys = [normalise(t.text) for t in negative]
    assert len(keys) == len(set(keys))
    assert keys[0] == "bad anatomy" and "cropped body" in keys  # includes first, then later presets
    assert {t.preset for t in negative} == {"body", "limbs", "hands", "face", "feet", "quality", "full_body"}
    assert "full body" in [t.text for t in positive]
    assert all(t.structure for t in negative if t.region != "quality")


def test_duplicates_are_found_through_weights_and_case(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("mine:\n  negative: ['(Extra Fingers:1.4)', 'six fingers']\n  region: hands\n")
    _, negative = compose(["hands", "mine"], load_presets(path))
    texts = [t.text for t in negative]
    assert "six fingers" in texts and not any("Extra Fingers" in t for t in texts)


def test_unknown_and_cyclic_presets_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'hand'"):
        compose(["hand"])
    path = tmp_path / "cycle.yaml"
    path.write_text("a:\n  include: [b]\nb:\n  include: [a]\n")
    with pytest.raises(ConfigError, match="includes itself"):
        compose(["a"], load_presets(path))


@pytest.mark.parametrize("text, message", [
    ("mine:\n  negatve: [x]\n", "unknown config key 'mine.negatve' \\(did you mean 'mine.negative'\\?\\)"),
    ("mine:\n  priority: high\n", "mine.priority: expected int"),
    ("mine:\n  region: elbows\n", "region: expected one of body"),
    ("mine: [x]\n", "mine: expected a mapping"),
])
def test_yaml_preset_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_presets(path)
    assert str(path) in str(err.value)


# pose to text --------------------------------------------------------------------------------------------------------

def _standing_front(scale: float = 100.0) -> np.ndarray:
    """A hand-built front-facing person in pixels (y down): arms down, legs together."""
    pts = {0: (0, -40), 1: (0, -30), 2: (-10, -28), 3: (-12, -12), 4: (-13, 3), 5: (10, -28), 6: (12, -12),
           7: (13, 3), 8: (-7, 0), 9: (-7, 24), 10: (-7, 47), 11: (7, 0), 12: (7, 24), 13: (7, 47),
           14: (-2, -42), 15: (2, -42), 16: (-6, -40), 17: (6, -40)}
    body = np.ones((18, 3))
    for i, (x, y) in pts.items():
        body[i, :2] = (200 + x * scale / 100, 200 + y * scale / 100)
    return body


def test_hand_built_poses():
    body = _standing_front()
    assert describe_pose(body).phrase() == "full body, front view, standing, arms at sides, legs together"
    crossed = body.copy()
    crossed[4, :2], crossed[7, :2] = (205, 185), (195, 185)  # each wrist across the chest
    assert describe_pose(crossed).arms == "crossed"
    raised = body.copy()
    raised[[3, 4, 6, 7], 1] = (150, 130, 150, 130)
    assert describe_pose(raised).arms == "raised"
    apart = body.copy()
    apart[[9, 10], 0], apart[[12, 13], 0] = (185, 178), (215, 222)
    assert describe_pose(apart).legs == "apart"
    back = body.copy()  # seen from behind: the person's left shoulder is on the viewer's left, no face
    back[:, 0] = 400 - back[:, 0]
    back[[0, 14, 15], 2] = 0
    assert describe_pose(back).view == "back"
    lying = body.copy()  # the whole person turned 90 degrees
    lying[:, :2] = (lying[:, :2] - 200) @ np.array([[0, 1], [-1, 0]]) + 200
    assert describe_pose(lying).posture == "lying"
    handstand = body.copy()  # turned 180 degrees: head down
    handstand[:, :2] = 400 - handstand[:, :2]
    assert describe_pose(handstand).posture == "inverted" and "upside down" in describe_pose(handstand).phrase()
    portrait = body.copy()
    portrait[[3, 4, 6, 7] + list(range(8, 14)), 2] = 0
    attrs = describe_pose(portrait)
    assert attrs.framing == "portrait" and attrs.view == "front" and attrs.posture is None and attrs.arms is None
    assert describe_pose(np.zeros((18, 3))).phrase() == ""
    with pytest.raises(ValueError, match="shape"):
        describe_pose(np.zeros((17, 3)))


def test_pose_to_text_on_labelled_renders():
    predicted, truth = [], []
    for seed in range(300):
        fig = render_labelled(seed, 64, supersample=1)
        predicted.append(describe_pose(fig.keypoints))
        truth.append(fig.labels)
    scores = score_attributes(predicted, truth)
    for key, s in scores.items():
        assert s["accuracy"] >= 0.95, (key, s)
    assert scores["framing"]["coverage"] == 1.0 and scores["view"]["coverage"] == 1.0
    assert scores["arms"]["coverage"] > 0.5 and scores["posture"]["coverage"] > 0.4


def test_the_largest_person_is_described_and_counted():
    small = _standing_front(scale=20)
    big = _standing_front()
    big[[4, 7], :2] = (205, 185), (195, 185)
    assert pose_phrase([small, big]).startswith("2 people, full body, front view, standing, arms crossed")
    assert pose_phrase([]) == ""


def test_labelled_sampler_fixes_labels_and_hides_the_face_from_behind():
    rng = np.random.default_rng(0)
    pose = sample_labelled_pose(rng, view="back", posture="kneeling")
    assert pose.labels["view"] == "back" and pose.labels["legs"] == "bent"
    assert not pose.visible[[0, 14, 15]].any() and pose.visible[[16, 17]].all()
    fig = render_labelled(3, 64, framing="portrait", posture="standing")
    assert (fig.keypoints[8:14, 2] == 0).all()  # the hips and legs are out of the picture
    with pytest.raises(ValueError, match="cannot go together"):
        sample_labelled_pose(rng, posture="sitting", legs="apart")
    with pytest.raises(ValueError, match="unknown label"):
        sample_labelled_pose(rng, arms="akimbo")


# tokens and embeddings -----------------------------------------------------------------------------------------------

def test_the_bundled_tokenizer_is_clip(tokenizer):
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == 77
    assert count_tokens(tokenizer, "a photo of a cat") == 5
    assert count_tokens(tokenizer, "a photo of a (cat:1.4)") == 5  # weighting syntax is not text


def test_default_negative_prompt_fits_one_window(tokenizer):
    pair = build_prompts(tokenizer=tokenizer)
    assert pair.negative_tokens <= 75 and pair.chunks == 1
    assert "extra fingers" in pair.negative and "correct anatomy" in pair.positive


def test_over_budget_chunks_or_drops_lowest_priority_terms_by_name(tokenizer, caplog):
    prompt = "a dancer on a stage in a red dress, dramatic light"
    chunked = build_prompts(prompt, presets=["anatomy", "full_body"], tokenizer=tokenizer)
    assert chunked.negative_tokens > 75 and chunked.chunks == 2 and not chunked.dropped
    with caplog.at_level(logging.WARNING):
        dropped = build_prompts(prompt, presets=["anatomy", "full_body"], tokenizer=tokenizer, on_overflow="drop")
    assert dropped.negative_tokens <= 75 and dropped.positive.startswith(prompt)
    assert dropped.dropped and min(t.priority for t in dropped.dropped) == 1
    assert all(t.text not in dropped.negative.split(", ") for t in dropped.dropped)
    assert all(f"'{t.text}'" in caplog.text for t in dropped.dropped)  # every dropped term is named
    structure = [t for t in dropped.dropped if t.structure]
    assert not structure or "STRUCTURE" in caplog.text


def test_user_text_already_holding_a_term_is_not_repeated(tokenizer):
    pair = build_prompts("a runner, full body", presets=["full_body"], tokenizer=tokenizer)
    assert pair.positive.count("full body") == 1


def test_compel_embeddings_have_the_pipeline_shapes(tokenizer, text_encoder):
    prompt = "a person standing, arms raised"
    embeds, negative = encode_prompts(tokenizer, text_encoder, [prompt, prompt], ["extra fingers"])
    assert embeds.shape == negative.shape == (2, 77, 32)
    ids = tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        plain = text_encoder(ids)[0]
    torch.testing.assert_close(embeds[:1], plain)  # no weights: exactly what the pipeline would encode
    weighted, _ = encode_prompts(tokenizer, text_encoder, ["a person standing, (arms raised:1.5)"])
    assert not torch.allclose(weighted, plain)
    long_prompt = ", ".join(["a very long prompt about a person standing"] * 12)
    embeds, negative = encode_prompts(tokenizer, text_encoder, [long_prompt], ["extra fingers"])
    assert embeds.shape == negative.shape and embeds.shape[1] == 77 * build_prompts(
        long_prompt, presets=[], tokenizer=tokenizer).chunks
    with pytest.raises(ValueError, match="negative prompts"):
        encode_prompts(tokenizer, text_encoder, ["a", "b", "c"], ["x", "y"])


# captions ------------------------------------------------------------------------------------------------------------

def test_caption_templates_dropout_and_shuffling():
    assert render("{caption}, {pose_text}", "a dancer", "") == "a dancer"
    assert render("photo of sks person, {pose_text}, {caption}", "", "standing") == "photo of sks person, standing"
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \{captoin\}"):
        CaptionConfig(template="{captoin}")
    with pytest.raises(ConfigError, match="proportion_empty_prompts"):
        CaptionConfig(dropout=1.5)
    rng = random.Random(0)
    assert make_caption(CaptionConfig(dropout=1.0), "a", "b", rng) == ""
    text = "sks, a, b, c, d, e, f"
    shuffled = {shuffle_tags(text, 1, random.Random(s)) for s in range(20)}
    assert len(shuffled) > 1 and all(s.startswith("sks, ") for s in shuffled)
    assert all(sorted(s.split(", ")) == sorted(text.split(", ")) for s in shuffled)
    config = CaptionConfig(shuffle_tags=True, keep_tags=2)
    out = make_caption(config, "sks woman, red dress, smiling", "full body", random.Random(1))
    assert out.startswith("sks woman, red dress")


def test_builtin_presets_cover_every_region():
    regions = {p.region for p in BUILTIN.values()}
    assert {"body", "limbs", "hands", "face", "feet", "framing", "quality"} <= regions


def test_a1111_weights_reach_compel():
    from compel import Compel

    from toolkit.prompts.syntax import to_compel

    def weights(prompt):
        parsed = Compel.parse_prompt_string(to_compel(prompt)).prompts[0].children
        return {f.text.strip(" ,"): round(f.weight, 4) for f in parsed}

    assert weights("a photo of a (cat:1.4)") == {"a photo of a": 1.0, "cat": 1.4}
    assert weights("((cat))") == {"cat": 1.21}  # nesting multiplies, as in A1111
    assert weights("a [dog]")["dog"] == pytest.approx(0.9091)
    assert weights("a (cat)1.3")["cat"] == 1.3  # compel's own syntax passes through
    assert to_compel(r"a \(literal\) bracket") == r"a \(literal\) bracket"
    assert to_compel("unclosed (cat") == "unclosed cat"


def test_cli_prints_prompts_with_token_counts(tmp_path):
    import subprocess
    import sys

    from toolkit.pose.keypoints import Person, Pose, save_pose

    fig = render_labelled(5, 128, view="front", framing="full_body", posture="standing", arms="crossed")
    save_pose(Pose(128, 128, [Person(fig.keypoints)]), tmp_path / "pose.json")
    result = subprocess.run([sys.executable, "-m", "toolkit.prompts", "--pose", str(tmp_path / "pose.json"),
                             "--preset", "anatomy", "--prompt", "a dancer"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pose:") and "full body, front view, standing, arms crossed" in lines[0]
    assert lines[1].startswith("positive (") and "/75 tokens): a dancer, full body" in lines[1]
    assert lines[2].startswith("negative (") and "extra fingers" in lines[2]


def test_cli_errors_name_the_file_and_key(tmp_path, capsys):
    from toolkit.prompts.__main__ import main

    assert main(["--pose", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    bad = tmp_path / "presets.yaml"
    bad.write_text("mine:\n  negatve: [x]\n")
    assert main(["--presets_file", str(bad), "--preset", "mine"]) == 2
    assert "mine.negatve" in capsys.readouterr().err
    assert main(["--preset", "nonesuch"]) == 2
    assert "unknown preset 'nonesuch'" in capsys.readouterr().err
