#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels a GPU machine without internet needs for this project
# (its image has torch, lightning, torchmetrics, tokenizers/transformers of other versions...), into .whl/.
# Carry .whl to the GPU machine and run scripts/gpu_session.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# pinned to the versions this project is tested with; transformers < 5.6 and its tokenizers range
BINARY=(
  fusion-bench==0.2.33 transformers==5.5.4 tokenizers==0.22.2 hydra-core==1.3.8 omegaconf==2.3.1
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  bidict==0.24.1
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d .whl "${BINARY[@]}"
# antlr4's runtime is published as a source archive only: build its (pure-Python) wheel here
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
du -sh .whl
