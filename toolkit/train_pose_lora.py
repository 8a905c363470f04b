"""Fine-tune Stable Diffusion with a LoRA on the UNet under a frozen ControlNet-OpenPose, so people follow the pose.

    python -m toolkit.make_tiny_sd --output_dir tiny_sd && python -m toolkit.figures --num_images 16 --resolution 64 \\
        --output_dir data/figures64                                       # offline, CPU: tiny models and figures
    accelerate launch -q toolkit/train_pose_lora.py --config recipes/pose_lora_tiny.yaml
    accelerate launch -q toolkit/train_pose_lora.py --config recipes/pose_lora_sd15.yaml --train_data_dir data/   # GPU
"""

from __future__ import annotations

import sys

from toolkit.lora.config import PoseLoraConfig
from toolkit.training.cli import command

main = command(PoseLoraConfig, "toolkit.lora.trainer:PoseLoraTrainer", __doc__)

if __name__ == "__main__":
    sys.exit(main())
