"""Pipeline FPS with decoding in the decode thread against decoding in worker processes (``--decode-processes``).

With onnxruntime on a small CPU the engine sets the pace and worker
processes only take its cores. What they are for is an engine faster than
the Python around it (a GPU); to stand in for one on any machine,
``--engine replay`` serves the shipped model's real outputs for the
video's first 40 frames, cycled, in about 0.1 ms a call, so decoding,
drawing and writing set the pace as they do on a GPU. Each setting runs
``--rounds`` times, alternated, in fresh pipelines over the same frames.

    python benchmarks/decode_workers_bench.py ../shared/data/video/vtest.avi --engine replay
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.pipeline import RunOptions
from rtpose.preprocess import preprocess
from rtpose.runner import DEFAULT_MODEL, Outputs, build_pipeline, pipeline_engine_threads, summarize
from rtpose.sources import open_source

CACHED = 40


class ReplayEngine:
    """The Engine interface over recorded outputs: ``infer`` returns the next one, whatever its input."""

    def __init__(self, engine, images) -> None:
        self.meta, self.max_batch, self.providers, self.threads = engine.meta, 1, ["replay"], 0
        self.outputs = [engine.infer(preprocess(image, engine.meta)[0]) for image in images]
        self.calls = 0

    def infer(self, batch):
        self.calls += 1
        return self.outputs[(self.calls - 1) % len(self.outputs)]

    def close(self) -> None:
        pass


def first_frames(video: str, count: int) -> list:
    source = open_source(video)
    frames = [f.image for f in itertools.islice(iter(source.read, None), count)]   # not the whole video
    source.close()
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video")
    parser.add_argument("--engine", choices=("replay", "onnxruntime"), default="replay")
    parser.add_argument("--processes", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    engine = OnnxRuntimeEngine(DEFAULT_MODEL, threads=pipeline_engine_threads())
    if args.engine == "replay":
        engine = ReplayEngine(engine, first_frames(args.video, CACHED))
    fps: dict[int, list[float]] = {n: [] for n in args.processes}
    for _ in range(args.rounds):
        for n in args.processes:
            options = RunOptions(overlay=True, render=True, max_frames=args.frames, decode_processes=n)
            pipeline = build_pipeline([open_source(args.video)], engine, Outputs(json_lines=Path(os.devnull)),
                                      options)
            done = pipeline.run()
            seconds = time.perf_counter() - pipeline.running_since     # from after the workers' start-up
            fps[n].append(summarize(done, seconds, pipeline.source_report())["fps"])
            print(f"decode processes {n}: {fps[n][-1]:6.1f} FPS", flush=True)
    for n, values in fps.items():
        print(f"decode processes {n}: {min(values):.1f}-{max(values):.1f} FPS over {len(values)} rounds "
              f"({args.engine} engine, {os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps({"engine": args.engine, "cores": os.cpu_count(), "fps": fps}, indent=2))


if __name__ == "__main__":
    main()
