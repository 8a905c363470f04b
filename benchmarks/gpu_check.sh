#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py says what it measures): one call on a lent GPU, under 8 minutes.
#
# Here, once per checkout: fetch the wheels the GPU machine's image lacks (it has torch, accelerate, transformers and
# peft, but not diffusers; nothing can be downloaded there) into .whl/, which git ignores. xformers is not among
# them: its wheels (over 100 MB, built per torch version) cannot travel, so the check records it as unavailable
# unless the machine has it.
#     benchmarks/gpu_check.sh --fetch_wheels
# Then, through the device tool, with time left to run it twice:
#     run(command="benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
# and back here, with the files it returned:
#     python benchmarks/gpu_check.py --record <files_at>/gpu_check.json      # appends the dated table to docs/gpu.md
# Anywhere, in a minute or two on a CPU (toy sizes; tests/test_gpu_check.py runs this):
#     benchmarks/gpu_check.sh --dry_run
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--fetch_wheels" ]]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  version=$(python3 -c "import diffusers; print(diffusers.__version__)")
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "diffusers==${version}" "importlib_metadata"
  ls -la .whl
  exit 0
fi
if [[ -d .whl ]] && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/diffusers-*.whl .whl/importlib_metadata-*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu_check.py --output "${OUT:-runs/gpu_check}" "$@"
