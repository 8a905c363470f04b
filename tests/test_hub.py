"""Model card, the dry-run upload folder, and token handling."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import tiny_argv

from toolkit.errors import UserError
from toolkit.hub import push_folder
from toolkit.train_unet import main

FAKE_TOKEN = "hf_" + "x" * 34


def card_metadata(readme):
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_dry_run_writes_exactly_the_upload_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    out = tmp_path / "run"
    argv = tiny_argv(out, max_train_steps=2, checkpointing_steps=1, hub_model_id="me/figures", report_to="tensorboard")
    assert main([*argv, "--hub_dry_run"]) == 0
    stage = out / "hub_upload"
    names = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert "model_index.json" in names and "README.md" in names and "samples/final.png" in names
    assert "unet/diffusion_pytorch_model.safetensors" in names and "config.yaml" in names and "loss.png" in names
    assert not any(n.startswith(("checkpoints/", "logs/")) for n in names)
    meta, text = card_metadata(stage / "README.md")
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "unconditional-image-generation"
    assert meta["license"] == "apache-2.0" and "anatomy-toolkit" in meta["tags"]
    assert "![samples](samples/final.png)" in text and "img/s" in text and "me/figures" in text
    printed = capsys.readouterr()
    assert "would be uploaded to me/figures" in printed.out
    # The token never lands in any file of the run (config, card, logs, checkpoints), nor in what was printed.
    assert FAKE_TOKEN not in printed.out + printed.err
    assert list(out.rglob("events.out.tfevents.*")) and list(out.rglob("trainer_state.json"))
    for path in out.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_model_card_names_a_hub_dataset(tmp_path):
    from toolkit.config import from_dict
    from toolkit.ddpm.card import card_info
    from toolkit.ddpm.config import TrainUNetConfig
    from toolkit.hub import build_model_card
    from toolkit.training.report import RunSummary

    cfg = from_dict(TrainUNetConfig, {"dataset_name": "someone/faces", "hub_model_id": "me/faces"})
    card = build_model_card(card_info(cfg, RunSummary(output_dir=str(tmp_path), total_steps=1)))
    assert card.data.datasets == ["someone/faces"] and card.data.library_name == "diffusers"


def test_push_without_token_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored login either
    with pytest.raises(UserError, match="no Hugging Face token"):
        push_folder(tmp_path, "me/model", private=False)


def test_push_to_hub_needs_a_model_id(tmp_path, capsys):
    assert main(tiny_argv(tmp_path / "run", push_to_hub=True)) == 2
    assert "hub_model_id" in capsys.readouterr().err


def test_restaging_replaces_the_previous_folder(tmp_path):
    from huggingface_hub import ModelCard

    from toolkit.hub import stage_upload

    (tmp_path / "model_index.json").write_text("{}")
    stale = tmp_path / "hub_upload" / "old.bin"
    stale.parent.mkdir()
    stale.write_text("x")
    stage = stage_upload(tmp_path, ModelCard("---\nlicense: mit\n---\nhi"), ["model_index.json", "unet"])
    assert sorted(p.name for p in stage.iterdir()) == ["README.md", "model_index.json"]
    shutil.rmtree(stage)
