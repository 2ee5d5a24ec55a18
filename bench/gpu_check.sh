#!/usr/bin/env bash
# The GPU checks of the paper-scale issue, in one run of at most 10 minutes, for a machine with
# NVIDIA GPUs and this project installed (make .venv/.installed):
#   1. CUDA: the devices torch sees, and bf16 autocast through the paper's supernet;
#   2. an nccl group of every GPU present, averaging a child's gradients (bench/search_profile.py);
#   3. one epoch of configs/voc.yaml on generated VOC-size data, timed part by part (data,
#      forward/backward, all-reduce, scoring, controller, database, checkpoint), with the peak
#      GPU memory and the projected hours of the 150-epoch search.
# Usage: bash bench/gpu_check.sh [OUT_DIR]   (figures in OUT_DIR, default ./gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"
py=.venv/bin/python
[ -x "$py" ] || py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
gpus=$("$py" -c 'import torch; print(torch.cuda.device_count())')
timeout 120 "$py" - <<'PY' | tee "$out/cuda.json"
import json, torch
from supernet.network import SuperNet
from supernet.space import SearchSpace
assert torch.cuda.is_available(), "torch sees no GPU"
space = SearchSpace(layers=12, channels=36, num_classes=22)
net = SuperNet(space).cuda()
x = torch.randn(8, 3, 256, 256, device="cuda")
with torch.autocast("cuda", dtype=torch.bfloat16):
    y = net(x, [0, 1, 2, 3, 4, 5] * 2)
y.float().mean().backward()
print(json.dumps({
    "devices": [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())],
    "torch": torch.__version__, "cuda": torch.version.cuda,
    "nccl": ".".join(map(str, torch.cuda.nccl.version())),
    "bf16_output_dtype": str(y.dtype), "bf16_finite": bool(torch.isfinite(y.float()).all()),
}))
PY
timeout 420 "$py" bench/search_profile.py --device cuda --images 2913 --repeats 5 \
    --replicas "$gpus" 2> "$out/search_profile.txt" | tee "$out/search_profile.json"
cat "$out/search_profile.txt" | grep -v decoding
