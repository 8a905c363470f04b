"""python -m toolkit.sample on a saved pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from toolkit.sample import main


@pytest.mark.parametrize("scheduler,steps", [("dpm", 3), ("ddim", 3), ("unipc", 3), ("ddpm", 5)])
def test_sample_writes_images_and_grid(trained_run, tmp_path, scheduler, steps):
    out = tmp_path / scheduler
    argv = ["--pipeline", str(trained_run), "--num_images", "3", "--num_inference_steps", str(steps),
            "--scheduler", scheduler, "--output_dir", str(out), "--batch_size", "2"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png", "grid.png"]
    assert Image.open(out / "00000.png").size == (16, 16)


def test_same_seed_same_images(trained_run, tmp_path):
    for name in ("a", "b"):
        main(["--pipeline", str(trained_run), "--num_images", "2", "--num_inference_steps", "2",
              "--output_dir", str(tmp_path / name)])
    a, b = (np.asarray(Image.open(tmp_path / n / "grid.png")) for n in ("a", "b"))
    assert np.array_equal(a, b)


def test_not_a_pipeline_is_a_clear_error(tmp_path, capsys):
    assert main(["--pipeline", str(tmp_path)]) == 2
    assert "not a saved pipeline" in capsys.readouterr().err


def test_commands_refuse_each_others_options(trained_run, tmp_path, capsys):
    out = tmp_path / "explicit"
    assert main(["ddpm", "--pipeline", str(trained_run), "--num_images", "1", "--num_inference_steps", "2",
                 "--output_dir", str(out)]) == 0
    assert (out / "00000.png").is_file()  # the explicit command does what the bare form does
    capsys.readouterr()
    assert main(["ddpm", "--pipeline", str(trained_run), "--lora", "x"]) == 2
    assert "--lora: an option of `toolkit.sample controlnet`, not of `toolkit.sample ddpm`" in capsys.readouterr().err
    assert main(["--pipeline", str(trained_run), "--prompt", "a cat", "--guidance_scale=3"]) == 2  # no command
    assert "--prompt, --guidance_scale: an option of `toolkit.sample controlnet`" in capsys.readouterr().err
    recipe = tmp_path / "sd.yaml"
    recipe.write_text(f"controlnet: {tmp_path / 'no_controlnet'}\nlora: x\nposes: {tmp_path}\n")
    assert main(["--config", str(recipe), "--pipeline", str(trained_run)]) == 2  # a recipe's keys pick the command
    assert "could not load the pipeline or ControlNet" in capsys.readouterr().err
    assert main(["ddpm", "--config", str(recipe), "--pipeline", str(trained_run)]) == 2  # ... and are checked too
    err = capsys.readouterr().err
    assert "--controlnet, --lora: an option of `toolkit.sample controlnet`" in err and "Traceback" not in err
