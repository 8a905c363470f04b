"""Write a tiny random Stable Diffusion pipeline and ControlNet-OpenPose for offline runs of the LoRA trainer.

    python -m toolkit.make_tiny_sd --output_dir tiny_sd
    accelerate launch -q toolkit/train_pose_lora.py --config recipes/pose_lora_tiny.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toolkit.errors import UserError, cli_errors


@cli_errors
def main(argv: list[str] | None = None) -> int:
    """Write DIR/sd and DIR/controlnet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="tiny_sd", help="folder to write sd/ and controlnet/ into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny",
                        help="tiny: seconds per step on a CPU (tests); small: SD 1.5's layout at a quarter width")
    args = parser.parse_args(argv)
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise UserError(f"output_dir {args.output_dir} is a file; give a folder to write sd/ and controlnet/ into")
    from toolkit.lora.tiny import SMALL, TINY, make_tiny_sd

    sd, controlnet = make_tiny_sd(args.output_dir, args.seed, TINY if args.size == "tiny" else SMALL)
    print(f"wrote {sd} (StableDiffusionPipeline) and {controlnet} (ControlNetModel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
