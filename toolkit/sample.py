"""Generate images and a grid from a saved pipeline: `ddpm` (train_unet.py) or `controlnet` (SD + ControlNet + LoRA).

    python -m toolkit.sample ddpm --pipeline runs/ddpm-figures --num_images 16 --num_inference_steps 20
    python -m toolkit.sample ddpm --pipeline runs/figures-pose --poses data/figures/keypoints
    python -m toolkit.sample controlnet --pipeline SD_DIR --controlnet CONTROLNET --lora runs/pose-lora \\
        --poses poses/ --prompt "a photo of a dancer" --scheduler unipc

Without a command, --controlnet selects `controlnet` and anything else `ddpm`, as before the commands existed. Each
command refuses the other's options with a one-line error. With --poses an image is made per pose, named like the
pose file, so that `python -m toolkit.evaluate --poses` (or `evaluate_poses`) can pair them.
"""

from __future__ import annotations

import dataclasses
import sys

from toolkit.config import parse_config
from toolkit.errors import UserError, cli_errors


def _commands() -> dict:
    """command -> (config class, function that samples and returns a status line)."""
    from toolkit.ddpm.generate import DDPMSampleConfig, sample_ddpm
    from toolkit.lora.generate import ControlNetSampleConfig, sample_controlnet

    return {"ddpm": (DDPMSampleConfig, sample_ddpm), "controlnet": (ControlNetSampleConfig, sample_controlnet)}


def _flags(cls: type) -> set[str]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {f"--{n}" for n in names} | {f"--no-{n}" for n in names}


def split_command(argv: list[str], commands: dict) -> tuple[str, list[str]]:
    """The command (given first, or inferred from --controlnet) and the remaining flags; flags that belong only
    to the other command are a one-line error naming them."""
    if argv and argv[0] in commands:
        command, argv = argv[0], argv[1:]
    else:
        command = "controlnet" if any(a.split("=")[0] == "--controlnet" for a in argv) else "ddpm"
    own = _flags(commands[command][0])
    foreign = [a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in own | {"--config"}]
    for other, (cls, _) in commands.items():
        wrong = [flag for flag in foreign if flag in _flags(cls)]
        if other != command and wrong:
            raise UserError(f"{', '.join(wrong)}: an option of `toolkit.sample {other}`, not of "
                            f"`toolkit.sample {command}`")
    return command, argv


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Pick the command, parse its flags (and a recipe), generate, and say what was written."""
    commands = _commands()
    command, argv = split_command(list(sys.argv[1:] if argv is None else argv), commands)
    config_cls, sample = commands[command]
    cfg = parse_config(config_cls, argv, description=f"toolkit.sample {command}: {config_cls.__doc__}")
    print(sample(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
