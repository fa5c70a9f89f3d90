"""INT8 and FP16 against FP32 on CPU: engine-only FPS in one run, and AP on a validation set.

    python benchmarks/calib_bench.py --int8 default_int8.onnx --fp16 default_fp16.onnx \\
        --val data/synth_val/annotations.json --json calib_bench.json [--variants CACHE.json]

The models run through rtpose's own ``OnnxRuntimeEngine`` (what ``rtpose run``
and ``bench`` use) on the same preprocessed validation images; the models are
run in turn on each image (FP32, INT8, FP16, FP32, ...), so load from other
work on the machine falls on all of them alike. Engine-only FPS is images
divided by the summed ``infer`` time, batch 1; first with 1 intra-op thread
(what the pipeline gives the engine on 2 cores), then with onnxruntime's
default. AP is ``rtpose eval``'s (calib.guard.ValidationSet).

``--variants RANGES.json`` also times other forms of the same INT8 model made
from the same cached ranges (measurements only: rtpose writes none of them,
TensorRT takes only the first), to show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calib.guard import ValidationSet  # noqa: E402
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from rtpose.preprocess import preprocess  # noqa: E402
from rtpose.runner import DEFAULT_MODEL  # noqa: E402


def machine() -> str:
    name, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_fp16") if f in flags]
    import os
    return (f"{name}, {os.cpu_count()} cores, {' '.join(simd) or 'no AVX2'}; Python {platform.python_version()}, "
            f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}")


def time_models(paths: dict[str, Path], inputs: list[np.ndarray], threads: int, rounds: int) -> dict[str, dict]:
    engines = {name: OnnxRuntimeEngine(path, threads=threads) for name, path in paths.items()}
    for engine in engines.values():                  # warm up: first runs allocate and pick kernels
        for x in inputs[:3]:
            engine.infer(x)
    times = {name: [] for name in engines}
    for _ in range(rounds):
        for x in inputs:
            for name, engine in engines.items():
                start = time.perf_counter()
                engine.infer(x)
                times[name].append(time.perf_counter() - start)
    for engine in engines.values():
        engine.close()
    return {name: {"fps": len(t) / sum(t), "median_ms": 1e3 * float(np.median(t)),
                   "p95_ms": 1e3 * float(np.percentile(t, 95)), "runs": len(t)} for name, t in times.items()}


def variants(model: Path, ranges: Path, workdir: Path) -> dict[str, Path]:
    """Other INT8 forms of ``model`` from the same ranges, for comparison only."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from calib.quantize import (
        EXTRA_OPTIONS,
        METHODS,
        OP_TYPES,
        drop_unused_initializers,
        keep_outputs_float,
        own_qdq_parameters,
        prepare,
        quiet,
    )
    method = METHODS[json.loads(ranges.read_text())["rtpose"]["method"]]
    prepared = prepare(model, workdir)
    out: dict[str, Path] = {}

    def make(name: str, fmt=QuantFormat.QDQ, activation=QuantType.QInt8, extra=None, op_types=OP_TYPES,
             reduce_range=False, own=True) -> None:
        path = workdir / f"{len(out)}.onnx"
        with quiet():
            quantize_static(str(prepared), str(path), None, quant_format=fmt, op_types_to_quantize=op_types,
                            per_channel=True, reduce_range=reduce_range, activation_type=activation,
                            weight_type=QuantType.QInt8, calibrate_method=method,
                            extra_options=extra or dict(EXTRA_OPTIONS), calibration_cache_path=str(ranges))
        model = onnx.load(str(path))
        if fmt == QuantFormat.QDQ:
            keep_outputs_float(model)
            if own:
                own_qdq_parameters(model)
            drop_unused_initializers(model)
        model.ir_version = min(model.ir_version, 10)
        onnx.save(model, str(path))
        out[name] = path

    make("INT8 Q/DQ as quantize_static writes it (shared Q/DQ parameters)", own=False)
    make("INT8 Q/DQ, Conv only", op_types=["Conv"])
    make("INT8 Q/DQ, reduce_range (7-bit weights)", reduce_range=True)
    make("INT8 QOperator (QLinearConv...), symmetric", fmt=QuantFormat.QOperator,
         extra={"ActivationSymmetric": True, "WeightSymmetric": True})
    make("Q/DQ with uint8 asymmetric activations (not for TensorRT)", activation=QuantType.QUInt8,
         extra={"WeightSymmetric": True, "DedicatedQDQPair": True, "QuantizeBias": False})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--fp16", type=Path)
    parser.add_argument("--val", type=Path, required=True, help="COCO-format annotations (images in <dir>/images)")
    parser.add_argument("--images", type=int, default=100, help="validation images timed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="intra-op threads (0: default)")
    parser.add_argument("--no-ap", action="store_true")
    parser.add_argument("--variants", type=Path, help="cached ranges (.rtpose-calib-cache/ranges-*.json)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    print(machine())
    paths = {"FP32": args.fp32, "INT8 Q/DQ": args.int8}
    if args.fp16:
        paths["FP16"] = args.fp16
    val = ValidationSet(args.val)
    meta = OnnxRuntimeEngine(args.fp32).meta
    inputs = [preprocess(im, meta)[0] for im in val.images[:args.images]]
    report = {"machine": machine(), "models": {k: str(v) for k, v in paths.items()}, "timing": {}, "ap": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.variants:
            paths.update(variants(args.fp32, args.variants, Path(tmp)))
        for threads in args.threads:
            label = "1 thread" if threads == 1 else ("default threads" if threads == 0 else f"{threads} threads")
            timing = time_models(paths, inputs, threads, args.rounds)
            report["timing"][label] = timing
            base = timing["FP32"]["fps"]
            print(f"\nengine-only, batch 1, {label}, {len(inputs)} images x {args.rounds} rounds, models in turn:")
            for name, t in timing.items():
                print(f"  {name:66s} {t['fps']:7.1f} FPS  median {t['median_ms']:6.2f} ms  "
                      f"p95 {t['p95_ms']:6.2f} ms  {t['fps'] / base:5.2f}x FP32")
        if not args.no_ap:
            print(f"\nAP on {args.val} ({len(val)} images):")
            for name, path in paths.items():
                engine = OnnxRuntimeEngine(path)
                stats = val.ap(engine)
                engine.close()
                report["ap"][name] = stats
                print(f"  {name:66s} AP {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}  AP75 {stats['AP75']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
