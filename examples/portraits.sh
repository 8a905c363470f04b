#!/usr/bin/env bash
# Train the portrait recipe (60 minutes) on the ORL faces (../shared/data/orl_faces, 400 grey 92x112 portraits),
# then sample.
# Usage: bash examples/portraits.sh [faces_dir] [output_dir]
set -euo pipefail
faces=${1:-../shared/data/orl_faces}
out=${2:-runs/ddpm-portraits}
accelerate launch --num_processes 1 toolkit/train_unet.py --config recipes/portraits_64.yaml \
    --train_data_dir "$faces" --output_dir "$out" --resume_from_checkpoint latest
python -m toolkit.sample ddpm --pipeline "$out" --num_images 36   # DDIM, 25 steps
