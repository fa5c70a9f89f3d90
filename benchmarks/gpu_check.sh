#!/usr/bin/env bash
# Everything to check and time on a machine with an NVIDIA GPU, in one go (GPU time is scarce):
#   bash benchmarks/gpu_check.sh CHECKPOINT OUT_DIR
# CHECKPOINT: a training checkpoint of the shipped recipe (runs/default/best.pt); OUT_DIR gets the logs.
# Needs torch with CUDA and the project importable (pip install -e ".[dev]", or PYTHONPATH=. with the
# dev extra's packages present); ../shared/data beside the checkout for the videos and sample photos.
# What it runs, each logged to OUT_DIR:
#   1. tests/test_gpu.py, then the whole suite (pytest -n 8 when pytest-xdist is there);
#   2. the checkpoint exported as a torch program, and benchmarks/cuda_bench.py (engine alone, AP per precision;
#      the held-out set is made first if data/synth_test is missing);
#   3. rtpose bench on vtest.avi: onnxruntime, .pt2 FP16 + CUDA graphs, and the latter with
#      --decode-processes 2 and 4.
set -uo pipefail
ckpt=${1:?usage: bash benchmarks/gpu_check.sh CHECKPOINT OUT_DIR}
out=${2:?usage: bash benchmarks/gpu_check.sh CHECKPOINT OUT_DIR}
video=../shared/data/video/vtest.avi
export PYTHONUNBUFFERED=1
mkdir -p "$out"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "error: torch sees no CUDA GPU here; this script is for a GPU machine" >&2; exit 1; }
[ -f "$ckpt" ] || { echo "error: checkpoint not found: $ckpt" >&2; exit 1; }
[ -f "$video" ] || { echo "error: $video not found (../shared/data beside the checkout)" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"

python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider 2>&1 | tee "$out/test_gpu.log" | tail -3
xdist=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
python3 -m pytest tests -q -p no:cacheprovider $xdist 2>&1 | tee "$out/suite.log" | tail -3

[ -f data/synth_test/annotations.json ] \
    || python3 -m rtpose.cli synth dataset data/synth_test --images 300 --seed 3 > /dev/null
python3 -m rtpose.cli export "$ckpt" --format torch --output "$out/model.pt2" --max-batch 8 2>&1 | tail -1
python3 benchmarks/cuda_bench.py "$out/model.pt2" --onnx rtpose/models/default.onnx --video "$video" \
    --annotations data/synth_test/annotations.json --json "$out/cuda_bench.json" 2>&1 | tee "$out/cuda_bench.log"

gpu=(--model "$out/model.pt2" --fp16 --cuda-graphs)
for run in "onnx" "pt2" "pt2 --decode-processes 2" "pt2 --decode-processes 4"; do
    set -- $run
    name=$(echo -n "$run" | tr -cs 'a-z0-9' '_')
    model=(); [ "$1" = pt2 ] && model=("${gpu[@]}")
    echo "== bench $run" | tee -a "$out/bench.log"
    python3 -m rtpose.cli bench --source "$video" "${model[@]}" "${@:2}" --json "$out/bench_$name.json" 2>&1 \
        | grep -v "^\s*$" | tee -a "$out/bench.log" | grep -E "pipeline \(threads\)|engine only"
done
