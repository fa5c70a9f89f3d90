"""The torch engine on a CUDA GPU: inference time by batch size and precision, and AP for each precision.

For each variant of one ``.pt2`` program (float32, float16, float16 with CUDA
graphs; channels-last throughout, TorchEngine's default on CUDA), over
letterboxed real frames of a video:

- engine-only time per call for batches 1, 4 and 8: the host-to-device copy,
  the forward pass and the copy of the outputs back, as ``infer`` does them
  (CUDA events are not used: the copy back synchronises, so wall time is the
  call's time); median of ``--repeats`` calls after ``--warmup``;
- COCO keypoint AP of the same engine on an annotated set (``--annotations``),
  decoded by the runtime's decoder, so a precision's cost in accuracy is
  measured, not assumed.

onnxruntime on the CPU is timed on the same batches for reference (the ratio
is of two processors, not of two engines on one).

    rtpose export runs/default/best.pt --format torch --output default.pt2 --max-batch 8
    python benchmarks/cuda_bench.py default.pt2 --onnx rtpose/models/default.onnx --video vtest.avi \
        --annotations data/synth_test/annotations.json --json cuda_bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.engine.torch_engine import TorchEngine
from rtpose.preprocess import preprocess

VARIANTS = {"fp32": {}, "fp16": {"fp16": True}, "fp16+graphs": {"fp16": True, "cuda_graphs": True}}
BATCHES = (1, 4, 8)


def read_frames(video: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if not frames:
        raise SystemExit(f"no frames read from {video}")
    return frames


def time_calls(engine, batch: np.ndarray, warmup: int, repeats: int) -> float:
    """Median wall milliseconds of ``engine.infer(batch)``."""
    for _ in range(warmup):
        engine.infer(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.infer(batch)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("program", type=Path, help=".pt2 written by rtpose export --format torch")
    parser.add_argument("--onnx", type=Path, help="the same model as ONNX, timed on the CPU for reference")
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--annotations", type=Path, help="COCO keypoint set to score each precision on")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark times the torch engine on one")

    engines = {name: TorchEngine.from_file(args.program, **options) for name, options in VARIANTS.items()}
    meta = engines["fp32"].meta
    frames = read_frames(args.video, max(BATCHES))
    batches = {n: np.concatenate([preprocess(f, meta)[0] for f in frames[:n]]) for n in BATCHES}
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cpu": platform.processor(),
              "model": str(args.program), "input": f"{meta.input_width}x{meta.input_height}", "ms": {}, "ap": {}}
    if args.onnx:
        engines["onnxruntime-cpu"] = OnnxRuntimeEngine(args.onnx)
    for name, engine in engines.items():
        # The CPU takes up to 20 ms a call: a tenth of the calls (at least 5), two warm-ups where that leaves 5.
        cpu = name == "onnxruntime-cpu"
        repeats = max(args.repeats // 10, 5) if cpu else args.repeats
        warmup = 2 if cpu and repeats == 5 else args.warmup
        report["ms"][name] = {n: round(time_calls(engine, b, warmup, repeats), 3)
                              for n, b in batches.items()}
        print(f"{name:16s} " + "  ".join(f"batch {n}: {ms:7.2f} ms ({n * 1000 / ms:6.0f} images/s)"
                                          for n, ms in report["ms"][name].items()), flush=True)
    if args.annotations:
        from trainer.annotations import load_keypoint_set
        from trainer.evaluate import evaluate
        kset = load_keypoint_set(args.annotations)
        for name in VARIANTS:
            report["ap"][name] = round(evaluate(engines[name], kset).stats["AP"], 4)
            print(f"{name:16s} AP {report['ap'][name]:.4f} on {args.annotations}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
