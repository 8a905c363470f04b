"""Pose-LoRA fine-tuning of (tiny, random) Stable Diffusion under a frozen ControlNet: which weights train, caching,
precision, resume, saved formats, validation, sampling and the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_inception
from safetensors.torch import load_file

from toolkit.config import ConfigError, from_dict
from toolkit.lora.config import PoseLoraConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny SD + ControlNet folders and 8 figures at 32 px with keypoints."""
    from toolkit.figures.dataset import write_dataset
    from toolkit.lora.tiny import make_tiny_sd

    root = tmp_path_factory.mktemp("tiny_sd")
    make_tiny_sd(root / "models")
    write_dataset(root / "figures", 8, 32, seed=0)
    return root


def lora_flags(tiny: Path, out: Path, **overrides) -> dict:
    flags = {"pretrained_model_name_or_path": str(tiny / "models/sd"),
             "controlnet_model_name_or_path": str(tiny / "models/controlnet"), "train_data_dir": str(tiny / "figures"),
             "output_dir": str(out), "resolution": 32, "train_batch_size": 2, "max_train_steps": 3, "rank": 4,
             "lora_alpha": 8, "learning_rate": 1e-2, "validation_steps": 100, "checkpointing_steps": 100,
             "num_validation_images": 2, "num_inference_steps": 2, "mixed_precision": "no", "report_to": "none",
             "score_poses": False, "random_flip": True, "num_cpu_threads": 2}
    flags.update(overrides)
    return flags


def lora_cfg(tiny: Path, out: Path, **overrides) -> PoseLoraConfig:
    return from_dict(PoseLoraConfig, lora_flags(tiny, out, **overrides))


def build_run(cfg: PoseLoraConfig):
    """A PoseLoraTrainer with its Accelerator, as the entry point builds it."""
    from toolkit.lora.trainer import PoseLoraTrainer
    from toolkit.training.loop import build

    return build(PoseLoraTrainer, cfg)


def train_step(run, step: int) -> tuple[float, float]:
    """One optimiser step of the shared loop on the trainer's own batch for `step`: (loss, grad norm)."""
    from toolkit.training.loop import optimizer_step

    return optimizer_step(run, step, next(run.batches(step)))["lora"]


def micro_loss(run, indices: list[int], generator: torch.Generator):
    return run.loss(run.phases[0], indices, generator)


def train(cfg: PoseLoraConfig):
    """A whole run (without the summary print and publishing of the entry point); returns its summary."""
    from toolkit.training.loop import train as train_run

    trainer, reason = build_run(cfg)
    return train_run(trainer, reason)


def as_argv(flags: dict) -> list[str]:
    argv = []
    for key, value in flags.items():
        argv += [f"--{key}"] if value is True else [f"--no-{key}"] if value is False else [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """One finished run with validation, pose scores and a hub dry run (read-only for the tests that use it)."""
    from toolkit.train_pose_lora import main

    out = tmp_path_factory.mktemp("lora") / "run"
    flags = lora_flags(tiny, out, validation_steps=2, score_poses=True, hub_model_id="me/pose-lora", hub_dry_run=True,
                       keep_best_pose_checkpoint=True, report_to="tensorboard")
    assert main(as_argv(flags)) == 0
    return out


def _snapshot(module: torch.nn.Module, lora: bool) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if ("lora_" in k) == lora}


def test_tiny_sd_folders_load_with_from_pretrained(tiny):
    from diffusers import ControlNetModel, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny / "models/sd")
    assert pipe.tokenizer.model_max_length == 77 and pipe.tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]
    controlnet = ControlNetModel.from_pretrained(tiny / "models/controlnet")
    assert controlnet.config.cross_attention_dim == pipe.unet.config.cross_attention_dim


def test_training_changes_only_the_lora_weights(tiny, tmp_path):
    run, _ = build_run(lora_cfg(tiny, tmp_path / "run"))
    m = run.models
    frozen = {name: _snapshot(mod, lora=False) for name, mod in
              (("text_encoder", m.text_encoder), ("vae", m.vae), ("controlnet", m.controlnet), ("unet", m.unet))}
    lora_before = _snapshot(m.unet, lora=True)
    assert lora_before and all("lora_" in n for n, p in m.unet.named_parameters() if p.requires_grad)
    assert sum(p.numel() for p in run.params) == sum(v.numel() for v in lora_before.values())
    for step in range(2):
        loss, _ = train_step(run, step)
        assert np.isfinite(loss)
    for name, module in (("text_encoder", m.text_encoder), ("vae", m.vae), ("controlnet", m.controlnet),
                         ("unet", m.unet)):
        after = _snapshot(module, lora=False)
        assert all(torch.equal(after[k], v) for k, v in frozen[name].items()), f"{name} changed"
    after = _snapshot(m.unet, lora=True)
    assert any(not torch.equal(after[k], v) for k, v in lora_before.items())


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_train_controlnet_too(tiny, tmp_path, mode):
    run, _ = build_run(lora_cfg(tiny, tmp_path / "run", train_controlnet=mode, gradient_checkpointing=True))
    trainable = [n for n, p in run.models.controlnet.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_" in n) == (mode == "lora") for n in trainable)
    before = {n: p.detach().clone() for n, p in run.models.controlnet.named_parameters() if p.requires_grad}
    unet_before = _snapshot(run.models.unet, lora=True)
    train_step(run, 0)
    after = dict(run.models.controlnet.named_parameters())
    assert any(not torch.equal(after[n], v) for n, v in before.items())
    unet_after = _snapshot(run.models.unet, lora=True)  # gradient checkpointing still trains the UNet's LoRA
    assert any(not torch.equal(unet_after[k], v) for k, v in unet_before.items())
    from toolkit.training.checkpoints import save_checkpoint

    path = save_checkpoint(run.accelerator, tmp_path / "ckpt", 1, {}, total_limit=None)
    assert (path / ("controlnet_lora.safetensors" if mode == "lora" else "controlnet")).exists()


def test_controlnet_from_unet_is_saved_for_inference(tiny, tmp_path):
    from diffusers import ControlNetModel

    from toolkit.sample import main

    out = tmp_path / "run"
    summary = train(lora_cfg(tiny, out, controlnet_model_name_or_path=None, train_controlnet="lora"))
    exported = ControlNetModel.from_pretrained(out / "controlnet")  # from_unet's random parts are not reproducible
    assert summary.controlnet == str(out / "controlnet") and (out / "controlnet_lora.safetensors").is_file()
    assert exported.config.conditioning_embedding_out_channels == [16, 32]  # sized to the 2x tiny VAE
    assert not any("lora" in n for n, _ in exported.named_parameters())  # the adapter is fused in
    assert next(exported.parameters()).dtype == torch.float32
    from toolkit.hub import build_model_card
    from toolkit.lora.finish import card_info

    cfg = lora_cfg(tiny, out, controlnet_model_name_or_path=None, train_controlnet="lora", hub_model_id="me/x")
    card = str(build_model_card(card_info(cfg, summary)))
    assert 'ControlNetModel.from_pretrained("me/x", subfolder="controlnet"' in card and "fused into" in card
    argv = ["--pipeline", str(tiny / "models/sd"), "--controlnet", str(out / "controlnet"), "--lora", str(out),
            "--poses", str(tiny / "figures/keypoints"), "--num_images", "1", "--num_inference_steps", "2",
            "--resolution", "32", "--output_dir", str(tmp_path / "gen")]
    assert main(argv) == 0 and (tmp_path / "gen" / "000000.png").is_file()


def test_a_datasets_dataset_with_columns(tiny, tmp_path):
    import datasets
    from PIL import Image

    from toolkit.lora.data import open_data

    figures = tiny / "figures"
    rows = [json.loads(line) for line in (figures / "metadata.jsonl").read_text().splitlines()][:3]
    ds = datasets.Dataset.from_dict({"photo": [Image.open(figures / r["file_name"]) for r in rows],
                                     "pose": [Image.open(figures / r["conditioning_image_file_name"]) for r in rows],
                                     "caption": [r["text"] for r in rows]})
    ds.save_to_disk(tmp_path / "ds")
    cfg = lora_cfg(tiny, tmp_path / "run", train_data_dir=None, dataset_name=str(tmp_path / "ds"),
                   image_column="photo", conditioning_image_column="pose", caption_column="caption")
    data = open_data(cfg)
    example = data.example(1)
    assert len(data) == 3 and not data.can_flip(1) and example.flipped_map is None  # no keypoints: never flipped
    assert example.image.shape == example.pose_map.shape == (3, 32, 32) and example.caption == rows[1]["text"]
    from toolkit.errors import UserError

    with pytest.raises(UserError, match="no column pose_map"):
        open_data(lora_cfg(tiny, tmp_path / "run", train_data_dir=None, dataset_name=str(tmp_path / "ds"),
                           image_column="photo", conditioning_image_column="pose_map"))


def test_reload_check_fails_loudly():
    from toolkit.lora.outputs import ReloadFailed, check_reload

    class Pipe:
        def load_lora_weights(self, folder, weight_name):
            pass

    trained, base = np.ones((1, 4, 4, 3)), np.zeros((1, 4, 4, 3))
    with pytest.raises(ReloadFailed, match="does not change the pipeline's output"):
        check_reload(Pipe, lambda p: base, trained=trained, base=base, folder=Path("lora"))
    with pytest.raises(ReloadFailed, match="does not reproduce the trained output"):
        check_reload(Pipe, lambda p: base + 0.1, trained=trained, base=base, folder=Path("lora"))

    class Broken(Pipe):
        def load_lora_weights(self, folder, weight_name):
            raise ValueError("bad keys")

    with pytest.raises(ReloadFailed, match="does not load into a pipeline: bad keys"):
        check_reload(Broken, lambda p: trained, trained=trained, base=base, folder=Path("lora"))


def test_cached_and_uncached_batches_give_the_same_loss(tiny, tmp_path):
    losses = []
    for cached in (True, False):
        run, _ = build_run(lora_cfg(tiny, tmp_path / f"run{cached}", cache_latents=cached,
                                    cache_text_embeddings=cached, proportion_empty_prompts=0.5))
        assert (run.caches.latents is not None) == cached
        with torch.no_grad():
            losses.append(micro_loss(run, [0, 3, 5], torch.Generator().manual_seed(7)))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-6)


def test_lora_weights_stay_fp32_under_bf16(tiny, tmp_path):
    run, _ = build_run(lora_cfg(tiny, tmp_path / "run", mixed_precision="bf16", train_controlnet="lora"))
    assert run.weight_dtype == torch.bfloat16
    assert next(run.models.vae.parameters()).dtype == torch.bfloat16
    base = [p for n, p in run.models.unet.named_parameters() if "lora_" not in n]
    assert all(p.dtype == torch.bfloat16 for p in base)
    loss, _ = train_step(run, 0)
    assert np.isfinite(loss) and all(p.dtype == torch.float32 for p in run.params)
    assert run.validate(1).is_file()  # mixed-dtype modules also generate (under autocast, as in training)


def test_resume_continues_exactly(tiny, tmp_path):
    out = tmp_path / "run"
    train(lora_cfg(tiny, out, max_train_steps=4, checkpointing_steps=2))
    straight = load_file(out / "pytorch_lora_weights.safetensors")
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    summary = train(lora_cfg(tiny, out, max_train_steps=4, checkpointing_steps=2, resume_from_checkpoint="latest"))
    assert summary.start_step == 2
    resumed = load_file(out / "pytorch_lora_weights.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_time_budget_plans_the_lora_run(tiny, tmp_path, monkeypatch):
    from toolkit.training import planning
    from toolkit.training.budget import PLAN_AFTER

    monkeypatch.setattr(planning, "plan_steps", lambda step, **_: PLAN_AFTER + 2)  # the timing-dependent estimate
    summary = train(lora_cfg(tiny, tmp_path / "run", max_train_steps=None, max_train_time=10))
    assert summary.total_steps == summary.steps_done == PLAN_AFTER + 2 and not summary.stopped_by_budget
    assert (tmp_path / "run" / "pytorch_lora_weights.safetensors").is_file()


@needs_inception
def test_in_loop_kid_is_kept_across_a_resume(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out, flags = tmp_path / "run", {"max_train_steps": 4, "checkpointing_steps": 2, "eval_steps": 2,
                                    "num_eval_images": 4, "num_eval_reference": 8}
    first = train(lora_cfg(tiny, out, **flags)).eval_history
    straight = load_file(out / "pytorch_lora_weights.safetensors")
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    summary = train(lora_cfg(tiny, out, resume_from_checkpoint="latest", **flags))
    assert [p["step"] for p in summary.eval_history] == [2, 4] and summary.eval_history[0] == first[0]
    assert all(np.isfinite(p["kid"]) for p in summary.eval_history)
    resumed = load_file(out / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)  # resuming with evaluations is exact


def test_saved_formats_reload_from_disk_and_change_the_output(tiny, trained):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    from toolkit.lora.outputs import KOHYA_FILE, LORA_FILE

    controlnet = ControlNetModel.from_pretrained(tiny / "models/controlnet")
    pipe = StableDiffusionControlNetPipeline.from_pretrained(tiny / "models/sd", controlnet=controlnet,
                                                             safety_checker=None, requires_safety_checker=False)
    pose = Image.open(sorted((tiny / "figures/conditioning").iterdir())[0])

    def run():
        return pipe("a person", image=pose, num_inference_steps=2, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    base = run()
    outputs = {}
    for name in (LORA_FILE, KOHYA_FILE):
        pipe.load_lora_weights(trained, weight_name=name)
        outputs[name] = run()
        pipe.unload_lora_weights()
    assert np.abs(outputs[LORA_FILE] - base).mean() > 1e-4
    np.testing.assert_allclose(outputs[KOHYA_FILE], outputs[LORA_FILE], atol=1e-5)
    np.testing.assert_allclose(run(), base, atol=1e-6)  # unloading restores the base model


def test_run_folder_summary_card_and_validation(trained):
    summary = json.loads((trained / "summary.json").read_text())
    reload = summary["reload"]
    assert set(reload) == {"pytorch_lora_weights.safetensors", "pose_lora_kohya.safetensors"}
    assert all(r["mean_change_vs_base"] > 0 and r["max_diff_vs_trained"] < 1e-2 for r in reload.values())
    from PIL import Image

    grid = Image.open(trained / "samples/final.png")
    assert grid.size == (3 * 34 + 2, 2 * 34 + 2)  # rows of pose | base | LoRA, 32 px tiles with 2 px padding
    assert (trained / "samples/step_000002.png").is_file()
    assert (trained / "lora_best" / "pytorch_lora_weights.safetensors").is_file()
    card = (trained / "README.md").read_text()
    assert "base_model:" in card and all(f"- {tag}" in card for tag in ("lora", "controlnet", "openpose"))
    staged = {p.name for p in (trained / "hub_upload").iterdir()}
    assert {"pytorch_lora_weights.safetensors", "pose_lora_kohya.safetensors", "README.md"} <= staged
    assert not (trained / "hub_upload" / "checkpoints").exists()
    assert list((trained / "logs" / "train_pose_lora").rglob("events.out.tfevents.*"))  # logged under its own name


def test_a_nan_loss_stops_with_the_shared_policy(tiny, tmp_path, monkeypatch):
    from toolkit.lora.trainer import PoseLoraTrainer
    from toolkit.training.loop import TrainingDiverged

    real = PoseLoraTrainer.loss
    monkeypatch.setattr(PoseLoraTrainer, "loss", lambda self, *args: real(self, *args) * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"loss became nan or inf at steps 1-2 \(2 in a row\).*Last good "
                                               r"checkpoint.*: none yet"):
        train(lora_cfg(tiny, tmp_path / "run", max_nan_steps=2))


def test_validation_scores_poses(trained):
    pytest.importorskip("mediapipe")
    scores = json.loads((trained / "summary.json").read_text())["pose_scores"]
    for which in ("base", "lora"):
        assert {"pck@0.2_torso", "oks_ap", "detection_rate"} <= set(scores[which])


def test_flipped_pose_map_is_redrawn_not_mirrored(tiny):
    from toolkit.lora.data import open_data

    data = open_data(lora_cfg(tiny, tiny / "unused"))
    example = data.example(0)
    assert data.can_flip(0) and example.flipped_map.shape == example.pose_map.shape == (3, 32, 32)
    mirrored = example.pose_map.flip(-1)
    drawn = lambda m: m.amax(0) > 40  # noqa: E731
    overlap = (drawn(example.flipped_map) & drawn(mirrored)).sum() / (drawn(example.flipped_map) | drawn(mirrored)).sum()
    assert overlap > 0.6  # the same skeleton, mirrored ...
    assert not torch.equal(example.flipped_map, mirrored)  # ... with left and right colours swapped
    assert "full body" in example.caption and example.caption.startswith("a person")
    unflipped = open_data(lora_cfg(tiny, tiny / "unused", random_flip=False))
    assert not unflipped.can_flip(0) and unflipped.example(0).flipped_map is None  # not drawn when not needed


def test_sample_cli_generates_from_poses_with_the_lora(tiny, trained, tmp_path):
    from PIL import Image

    from toolkit.sample import main

    out = tmp_path / "gen"
    argv = ["--pipeline", str(tiny / "models/sd"), "--controlnet", str(tiny / "models/controlnet"), "--lora",
            str(trained), "--poses", str(tiny / "figures/keypoints"), "--num_images", "2", "--num_inference_steps", "2",
            "--resolution", "32", "--scheduler", "unipc", "--output_dir", str(out)]
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png", "grid.png"]
    assert sorted(p.name for p in (out / "poses").iterdir()) == ["000000.json", "000001.json"]
    kohya = argv[:5] + [str(trained / "pose_lora_kohya.safetensors")] + argv[6:-1] + [str(tmp_path / "kohya")]
    assert main(kohya) == 0  # a LoRA file, here the A1111 / ComfyUI one, works as well
    np.testing.assert_allclose(np.asarray(Image.open(tmp_path / "kohya" / "000000.png"), dtype=float),
                               np.asarray(Image.open(out / "000000.png"), dtype=float), atol=2)
    assert main(argv[:6]) == 2  # --controlnet without --poses: a one-line error


def test_validation_poses_from_a_folder(tiny, tmp_path):
    from toolkit.lora.data import open_data
    from toolkit.lora.validation import validation_set
    from toolkit.prompts.tokenizer import load_tokenizer

    cfg = lora_cfg(tiny, tmp_path, validation_poses=str(tiny / "figures/keypoints"), num_validation_images=3,
                   validation_prompt="a photo of a dancer")
    val = validation_set(cfg, open_data(cfg), load_tokenizer())
    assert val.names == ["000000", "000001", "000002"] and val.maps.shape == (3, 32, 32, 3)
    assert all(p.startswith("a photo of a dancer, full body") for p in val.prompts)
    assert "extra fingers" in val.negative and val.poses[0].width == 32


def test_config_errors_name_the_problem(tiny, tmp_path):
    with pytest.raises(ConfigError, match="pretrained_model_name_or_path is required"):
        from_dict(PoseLoraConfig, {"train_data_dir": "x"})
    with pytest.raises(ConfigError, match="no-cache_text_embeddings"):
        lora_cfg(tiny, tmp_path, shuffle_tags=True)
    with pytest.raises(ConfigError, match="unknown config key 'lora_rank'"):
        from_dict(PoseLoraConfig, {**lora_flags(tiny, tmp_path), "lora_rank": 4})
    from toolkit.train_pose_lora import main

    assert main(as_argv(lora_flags(tiny, tmp_path / "a", train_data_dir=str(tmp_path)))) == 2
    assert main(as_argv(lora_flags(tiny, tmp_path / "b", pretrained_model_name_or_path=str(tmp_path / "none")))) == 2


@pytest.mark.slow
def test_accelerate_launch_smoke(tiny, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "no",
           str(ROOT / "toolkit/train_pose_lora.py"), *as_argv(lora_flags(tiny, out, max_train_steps=2))]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run finished" in result.stdout and (out / "pose_lora_kohya.safetensors").is_file()


def test_a_corrupt_image_is_skipped_and_counted(tiny, tmp_path):
    data = tmp_path / "figures"
    shutil.copytree(tiny / "figures", data)
    (data / "images" / "000002.png").write_bytes(b"not a png")
    for cached in (True, False):
        run, _ = build_run(lora_cfg(tiny, tmp_path / f"run{cached}", train_data_dir=str(data), cache_latents=cached,
                                    train_batch_size=8))
        loss, _ = train_step(run, 0)  # all 8 examples, the unreadable one replaced by the next
        assert np.isfinite(loss)
        with torch.no_grad():  # alone in its batch, the unreadable example is replaced by the next readable one
            alone = micro_loss(run, [2], torch.Generator().manual_seed(1))
            substitute = micro_loss(run, [3], torch.Generator().manual_seed(1))
        torch.testing.assert_close(alone, substitute)  # never an empty batch: every process joins each all-reduce
        assert run.data.skipped == [str((data / "images" / "000002.png").resolve())]
        assert run.caches.skipped == ([2] if cached else [])


def test_loss_options_change_the_loss(tiny, tmp_path):
    def loss(**overrides):
        run, _ = build_run(lora_cfg(tiny, tmp_path / "run", overwrite_output_dir=True, **overrides))
        with torch.no_grad():
            return float(micro_loss(run, [0, 1], torch.Generator().manual_seed(3))), run

    plain, _ = loss()
    weighted, _ = loss(pose_loss_weight=4.0)
    assert weighted > plain  # weights 1 + 4 x limb mask are >= 1 everywhere
    v_loss, run = loss(prediction_type="v_prediction", snr_gamma=5.0, noise_offset=0.1)
    assert run.models.noise_scheduler.config.prediction_type == "v_prediction" and np.isfinite(v_loss)
    assert v_loss != plain
    edm_loss, _ = loss(prediction_type="v_prediction", edm_sigma_data=0.5)
    unweighted, _ = loss(prediction_type="v_prediction")
    assert edm_loss > unweighted  # EDM's weights on v's error are 1 to 4


def test_unavailable_speedups_fall_back_with_a_message(tiny, tmp_path, capsys):
    run, _ = build_run(lora_cfg(tiny, tmp_path / "run", use_8bit_adam=True,
                                enable_xformers_memory_efficient_attention=True))
    assert type(run.phases[0].optimizer.optimizer).__name__ == "AdamW"
    out = capsys.readouterr().out
    assert "xformers needs CUDA" in out and "--use_8bit_adam: bitsandbytes unavailable" in out
