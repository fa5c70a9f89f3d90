"""Decode time against the number of people, on one CPU core.

Three decoders on the same maps: the plain reference (``rtpose.decoder.decode``),
the fast decoder on dense maps and the fast decoder on peaks found in the
graph (``rtpose.fast_decoder.decode_outputs``). Only the Python-side decode is
timed; what the added graph nodes cost is measured apart, as onnxruntime
inference of the model with and without its peak outputs.

The maps come from synthetic scenes of exactly N people
(``rtpose.synthetic.scene``) at the model's input size, either as the
model's outputs on the rendered images (``--maps model``: what the runtime
decodes, weak extra peaks included) or as targets encoded from the scenes'
annotations (``--maps targets``: clean maps, one peak per keypoint).

    python benchmarks/decode_bench.py --json decode_bench.json
"""

from __future__ import annotations

import os

# One core, one thread everywhere: set before numpy and onnxruntime load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run from a checkout, installed or not

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from export.onnx_file import read_onnx_meta as read_meta  # noqa: E402
from export.peak_graph import add_peak_outputs, dense_maps_model  # noqa: E402
from rtpose.decoder import decode  # noqa: E402
from rtpose.fast_decoder import decode_outputs  # noqa: E402
from rtpose.model_meta import DecoderConfig  # noqa: E402
from rtpose.preprocess import preprocess  # noqa: E402
from rtpose.runner import cpu_name  # noqa: E402
from rtpose.synthetic.scene import SceneConfig, draw_scene, image_rng  # noqa: E402

DEFAULT_MODEL = ROOT / "rtpose" / "models" / "default.onnx"
DECODERS = ("plain", "fast_dense", "fast_peaks")


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def once(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def scene_maps(args, count: int, dense_model: onnx.ModelProto, peak_model: onnx.ModelProto):
    """Per scene: dense outputs, peak outputs (batch dimension removed); and inference times per model."""
    meta = read_meta(dense_model)
    config = SceneConfig(width=meta.input_width, height=meta.input_height, min_people=count, max_people=count)
    scenes = [draw_scene(image_rng(args.seed + count, i), config) for i in range(args.scenes)]
    infer = {"dense": [], "peaks": []}
    maps = []
    if args.maps == "model":
        dense, peaks = session(dense_model), session(peak_model)
        for scene in scenes:
            feed = {meta.input_name: preprocess(scene.image, meta)[0]}
            for _ in range(args.infer_repeats):   # alternating, so changes in machine load hit both alike
                t, out_dense = once(dense.run, None, feed)
                infer["dense"].append(t)
                t, out_peaks = once(peaks.run, None, feed)
                infer["peaks"].append(t)
            maps.append(([o[0] for o in out_dense], [o[0] for o in out_peaks]))
    else:
        from trainer.targets import encode   # the benchmark may use the trainer; the runtime never does
        finder = session(add_peak_outputs(dense_maps_model(meta), read_meta(peak_model).peak_top_k))
        for scene in scenes:
            keypoints = np.array([p["keypoints"] for p in scene.persons], np.float32)
            targets = encode(keypoints, np.array([p["area"] for p in scene.persons]), meta)
            dense = [targets.heatmaps, targets.offsets, targets.refinements]
            feed = {f"{n}_in": m[None] for n, m in zip(meta.output_names, dense)}
            maps.append((dense, [o[0] for o in finder.run(None, feed)]))
    return scenes, maps, infer


def measure(args, count: int, dense_model: onnx.ModelProto, peak_model: onnx.ModelProto,
            decoder: DecoderConfig) -> dict:
    meta, peak_meta = read_meta(dense_model), read_meta(peak_model)
    config = replace(decoder, max_persons=max(decoder.max_persons, 2 * count))
    scenes, maps, infer = scene_maps(args, count, dense_model, peak_model)
    times = {d: [] for d in DECODERS}
    found, peaks, same = [], [], True
    for dense, in_graph in maps:
        runs = {"plain": partial(decode, *dense, meta, config),
                "fast_dense": partial(decode_outputs, tuple(dense), meta, config),
                "fast_peaks": partial(decode_outputs, tuple(in_graph), peak_meta, config)}
        people = {name: fn() for name, fn in runs.items()}   # warm up
        for _ in range(args.repeats):
            for name, fn in runs.items():                    # round robin, as for inference
                t, _ = once(fn)
                times[name].append(t)
        for name in DECODERS[1:]:
            # 1e-4 px, as tests/test_fast_decoder.py: the graph sums the refinement votes in another order.
            same &= (people[name].keypoints.shape == people["plain"].keypoints.shape
                     and np.allclose(people[name].keypoints, people["plain"].keypoints, rtol=0, atol=1e-4)
                     and np.allclose(people[name].scores, people["plain"].scores, rtol=0, atol=1e-6))
        found.append(len(people["plain"]))
        peaks.append(int((in_graph[0][:, :config.top_k] > config.heatmap_threshold).sum()))

    def stats(t: list[float]) -> dict:
        return {"median_ms": 1e3 * float(np.median(t)), "p95_ms": 1e3 * float(np.percentile(t, 95))}

    row = {"people": count, "max_persons": config.max_persons,
           "annotated": float(np.mean([len(s.persons) for s in scenes])),
           "found": float(np.mean(found)), "peaks": float(np.mean(peaks)), "same_people": bool(same),
           **{name: stats(t) for name, t in times.items()}}
    if infer["dense"]:
        row["inference"] = {"dense": stats(infer["dense"]), "peaks": stats(infer["peaks"])}
    return row


def table(rows: list[dict]) -> str:
    head = ("| people | found | peaks | plain median / p95 (ms) | fast, dense maps | fast, in-graph peaks "
            "| same people |")
    lines = [head, "|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        cells = [f"{r[d]['median_ms']:.2f} / {r[d]['p95_ms']:.2f}" for d in DECODERS]
        lines.append(f"| {r['people']} | {r['found']:.1f} | {r['peaks']:.0f} | " + " | ".join(cells)
                     + f" | {'yes' if r['same_people'] else 'NO'} |")
    if "inference" in rows[0]:
        lines += ["", "| people | inference, dense outputs (ms) | inference, peak outputs (ms) | added by peak nodes |",
                  "|---:|---:|---:|---:|"]
        for r in rows:
            d, p = r["inference"]["dense"]["median_ms"], r["inference"]["peaks"]["median_ms"]
            lines.append(f"| {r['people']} | {d:.2f} | {p:.2f} | {p - d:+.2f} ({100 * (p - d) / d:+.0f}%) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="dense rtpose ONNX model (default: shipped)")
    parser.add_argument("--maps", choices=("model", "targets"), default="model",
                        help="model outputs on rendered scenes, or targets encoded from their annotations")
    parser.add_argument("--people", type=int, nargs="+", default=[1, 5, 10, 20, 30, 40])
    parser.add_argument("--scenes", type=int, default=8, help="scenes per number of people")
    parser.add_argument("--repeats", type=int, default=30, help="timed decodes per scene and decoder")
    parser.add_argument("--infer-repeats", type=int, default=5, help="timed inferences per scene and model")
    parser.add_argument("--top-k", type=int, default=None, help="peaks per type in the graph (default: model's top_k)")
    parser.add_argument("--max-offset-distance", type=float, default=None,
                        help="the decoder's grouping tolerance (default: the model's)")
    parser.add_argument("--fill-threshold", type=float, default=None,
                        help="lowest score of a peak that fills a missing keypoint; 1: no filling (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--core", type=int, default=0, help="the CPU core to run on")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    dense_model = onnx.load(str(args.model))
    meta = read_meta(dense_model)
    peak_model = add_peak_outputs(dense_model, args.top_k or meta.decoder.top_k)
    given = {"max_offset_distance": args.max_offset_distance, "fill_threshold": args.fill_threshold}
    decoder = replace(meta.decoder, **{name: value for name, value in given.items() if value is not None})
    rows = []
    for count in args.people:
        rows.append(measure(args, count, dense_model, peak_model, decoder))
        print(f"{count} people: plain {rows[-1]['plain']['median_ms']:.2f} ms, "
              f"fast {rows[-1]['fast_dense']['median_ms']:.2f} ms, "
              f"in-graph peaks {rows[-1]['fast_peaks']['median_ms']:.2f} ms", flush=True)
    cpu = cpu_name()
    source = ("model outputs on rendered synthetic scenes" if args.maps == "model"
              else "targets encoded from synthetic scenes' annotations")
    print(f"\nmaps: {source}, {meta.input_width}x{meta.input_height} input, {args.model.name}, "
          f"{args.scenes} scenes x {args.repeats} decodes per row; core {args.core} of {cpu}; "
          f"Python {platform.python_version()}, numpy {np.__version__}, onnxruntime {ort.__version__}\n")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"maps": args.maps, "model": str(args.model), "cpu": cpu, "core": args.core,
                                         "decoder": vars(decoder), "rows": rows}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
