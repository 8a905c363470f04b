"""Config loading, recipe < flag precedence, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.config import ConfigError, from_dict, parse_config, save_yaml
from toolkit.ddpm.config import TrainUNetConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def parse(argv):
    return parse_config(TrainUNetConfig, argv, "test")


def test_defaults_are_valid():
    cfg = parse([])
    assert cfg.model_preset == "small" and cfg.resolution == 48 and cfg.use_ema and cfg.stages == []


def test_recipe_then_flags_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("resolution: 64\nlearning_rate: 1.0e-4\nuse_ema: true\n")
    cfg = parse(["--config", str(recipe), "--resolution", "40", "--no-use_ema"])
    assert cfg.resolution == 40 and cfg.learning_rate == 1e-4 and cfg.use_ema is False


def test_int_accepted_where_float_expected():
    assert from_dict(TrainUNetConfig, {"learning_rate": 1}).learning_rate == 1.0


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match="unknown config key 'learning_rat'.*did you mean 'learning_rate'"):
        from_dict(TrainUNetConfig, {"learning_rat": 1e-4})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="train_batch_size: expected int, got 'eight'"):
        from_dict(TrainUNetConfig, {"train_batch_size": "eight"})
    with pytest.raises(ConfigError, match="use_ema: expected bool"):
        from_dict(TrainUNetConfig, {"use_ema": 1})


def test_nested_stage_errors_name_the_path():
    with pytest.raises(ConfigError, match=r"stages\[1\].resolution: expected int"):
        from_dict(TrainUNetConfig, {"stages": [{"resolution": 32, "steps": 5}, {"resolution": "big", "steps": 5}]})
    with pytest.raises(ConfigError, match=r"unknown config key 'stages\[0\].step'"):
        from_dict(TrainUNetConfig, {"stages": [{"resolution": 32, "step": 5}]})


def test_literal_choices_and_value_checks():
    with pytest.raises(ConfigError, match="prediction_type"):
        from_dict(TrainUNetConfig, {"prediction_type": "noise"})
    with pytest.raises(ConfigError, match="resolution must be >= 1"):
        from_dict(TrainUNetConfig, {"resolution": 0})
    with pytest.raises(ConfigError, match="either train_data_dir or dataset_name"):
        from_dict(TrainUNetConfig, {"train_data_dir": "a", "dataset_name": "b"})
    with pytest.raises(ConfigError, match="hub_model_id"):
        from_dict(TrainUNetConfig, {"push_to_hub": True})
    with pytest.raises(ConfigError, match="edm_sigma_data and snr_gamma are two loss weightings"):
        from_dict(TrainUNetConfig, {"edm_sigma_data": 0.5, "snr_gamma": 5.0})
    with pytest.raises(ConfigError, match="edm_sigma_data must be > 0"):
        from_dict(TrainUNetConfig, {"edm_sigma_data": 0.0, "snr_gamma": None})
    with pytest.raises(ConfigError, match="edm_sigma_data needs prediction_type v_prediction"):
        from_dict(TrainUNetConfig, {"edm_sigma_data": 0.5})  # x0-prediction by default
    edm = {"edm_sigma_data": 0.5, "snr_gamma": None, "prediction_type": "v_prediction"}
    assert from_dict(TrainUNetConfig, edm).edm_sigma_data == 0.5


def test_bad_recipe_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        parse(["--config", str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("resolution: [64\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        parse(["--config", str(bad)])
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse(["--config", str(bad)])


def test_resolved_config_round_trips(tmp_path):
    cfg = from_dict(TrainUNetConfig, {"stages": [{"resolution": 32, "steps": 5}], "snr_gamma": 5})
    save_yaml(cfg, tmp_path / "config.yaml")
    assert parse(["--config", str(tmp_path / "config.yaml")]) == cfg


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_parse(recipe):
    if recipe.name.startswith("pose_lora"):  # train_pose_lora.py's; the data folder comes on the command line
        from toolkit.lora.config import PoseLoraConfig

        cfg = parse_config(PoseLoraConfig, ["--config", str(recipe), "--train_data_dir", "data/"], "pose lora")
        assert cfg.pretrained_model_name_or_path and cfg.max_train_steps >= 100
        return
    if recipe.name.startswith("gan_"):  # train_gan.py's
        from toolkit.gan.config import TrainGANConfig

        parse_config(TrainGANConfig, ["--config", str(recipe)], "gan")
        return
    parse(["--config", str(recipe)])


def test_options_page_is_up_to_date():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_docs", RECIPES.parent / "docs" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (RECIPES.parent / "docs" / "train_unet.md").read_text()
    assert page == module.render(), "docs/train_unet.md is stale: run python docs/make_docs.py"
    page = (RECIPES.parent / "docs" / "train_pose_lora.md").read_text()
    assert page == module.render_pose_lora(), "docs/train_pose_lora.md is stale: run python docs/make_docs.py"
    page = (RECIPES.parent / "docs" / "train_gan.md").read_text()
    assert page == module.render_gan(), "docs/train_gan.md is stale: run python docs/make_docs.py"
    page = (RECIPES.parent / "docs" / "tune_options.md").read_text()
    assert page == module.render_tune(), "docs/tune_options.md is stale: run python docs/make_docs.py"


def test_optional_values_can_be_cleared(tmp_path):
    assert parse([]).checkpoints_total_limit == 3
    assert parse(["--checkpoints_total_limit", "none"]).checkpoints_total_limit is None
    assert parse(["--snr_gamma", "2.5"]).snr_gamma == 2.5
    recipe = tmp_path / "r.yaml"
    recipe.write_text("snr_gamma: 5.0\ncheckpoints_total_limit: 7\n")
    cfg = parse(["--config", str(recipe), "--checkpoints_total_limit", "none", "--snr_gamma", "none"])
    assert cfg.snr_gamma is None and cfg.checkpoints_total_limit is None


@pytest.mark.parametrize("name", ["train_unet", "train_pose_lora"])
def test_run_folders_written_before_the_shared_core_still_load(name):
    """A config.yaml from a run of the earlier, separate configs reproduces that run's options exactly."""
    import yaml

    from toolkit.config import to_dict
    from toolkit.ddpm.config import TrainUNetConfig
    from toolkit.lora.config import PoseLoraConfig

    path = RECIPES.parent / "tests" / "fixtures" / f"resolved_{name}_v0.yaml"
    cls = TrainUNetConfig if name == "train_unet" else PoseLoraConfig
    old = yaml.safe_load(path.read_text())
    new = to_dict(parse_config(cls, ["--config", str(path)], name))
    assert {k: new[k] for k in old} == old  # every old key, with its value (new options take their defaults)
    required = {k: old[k] for k in ("pretrained_model_name_or_path", "train_data_dir")} if cls is PoseLoraConfig else {}
    defaults = from_dict(cls, required)
    if cls is PoseLoraConfig:  # max_train_steps now defaults to none, so that --num_epochs can take effect ...
        from toolkit.training.runs import total_steps

        assert defaults.max_train_steps is None and total_steps(defaults, 10, 1) == old.pop("max_train_steps") == 1000
    else:  # the validation solver, the loss and the no-argument run changed by measurement (time_to_quality.md) ...
        changed = {"validation_scheduler": ("dpm", "ddim"), "num_inference_steps": (20, 25),
                   "prediction_type": ("epsilon", "sample"), "snr_gamma": (5.0, None), "resolution": (32, 48),
                   "conditioning": ("none", "auto"), "random_flip": (True, False)}
        for key, (before, now) in changed.items():
            assert (old.pop(key), to_dict(defaults)[key]) == (before, now), key
    assert {k: to_dict(defaults)[k] for k in old} == old  # ... and every other old default is unchanged
