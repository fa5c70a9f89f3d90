"""What ``rtpose run``, ``rtpose bench`` and ``rtpose demo`` do, without the command line."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

import rtpose
from rtpose.engine import Engine, open_engine
from rtpose.pipeline import THREADS, Pipeline, RunOptions
from rtpose.preprocess import preprocess
from rtpose.progress import Progress
from rtpose.sinks import JsonLinesSink, Sink, VideoSink, WindowSink
from rtpose.sources import Source, open_source
from rtpose.stats import summarize

DEFAULT_MODEL = Path(rtpose.__file__).parent / "models" / "default.onnx"


def pipeline_engine_threads() -> int:
    """CPU threads for inference inside the pipeline: half the cores, the rest for the other stages.

    On 2 cores one inference thread gave 42 FPS end to end on vtest.avi
    against 37 with two, which fought decode and render for the CPU
    (benchmarks/README.md).
    """
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class Outputs:
    video: Path | None = None
    json_lines: Path | None = None
    show: bool = False


def open_sinks(outputs: Outputs, fps: float) -> list[Sink]:
    sinks: list[Sink] = []
    try:
        if outputs.video:
            sinks.append(VideoSink(outputs.video, fps))
        if outputs.json_lines:
            sinks.append(JsonLinesSink(outputs.json_lines))
        if outputs.show:
            sinks.append(WindowSink())
    except Exception:
        for s in sinks:
            s.close()
        raise
    return sinks


def run(source_spec: str, model: str | Path, outputs: Outputs, options: RunOptions = RunOptions(),
        progress: bool = True, engine_threads: int | None = None) -> dict:
    """Run the pipeline over a source; returns the figures of :func:`rtpose.stats.summarize`."""
    engine = open_engine(model, pipeline_engine_threads() if engine_threads is None else engine_threads)
    source = open_source(source_spec)
    try:
        sinks = open_sinks(outputs, source.fps)
    except Exception:
        source.close()
        raise
    bar = Progress(source.frame_count, "run", "frame") if progress and source.frame_count else None
    pipeline = Pipeline(source, engine, sinks, options, on_frame=(lambda f: bar.update(1)) if bar else None)
    started = time.perf_counter()
    try:
        frames = pipeline.run()
    finally:
        if bar:
            bar.close()
        engine.close()
    return summarize(frames, time.perf_counter() - started)


# --- bench


def machine_info(engine: Engine) -> dict:
    return {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
        "rtpose": rtpose.__version__, "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
        "numpy": np.__version__, "providers": getattr(engine, "providers", None),
        "engine_threads": getattr(engine, "threads", None), "pipeline_threads": len(THREADS),
        "input": f"{engine.meta.input_width}x{engine.meta.input_height}", "model": engine.meta.architecture,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _LimitedSource:
    """The first ``limit`` frames of a source."""

    def __init__(self, source: Source, limit: int | None) -> None:
        self.inner, self.limit, self.count = source, limit, 0
        self.name, self.fps, self.live = source.name, source.fps, source.live
        self.frame_count = min(x for x in (source.frame_count, limit) if x is not None) \
            if (source.frame_count or limit) else None

    def read(self):
        if self.limit is not None and self.count >= self.limit:
            return None
        self.count += 1
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


def engine_only_fps(engine: Engine, source_spec: str, frames: int) -> dict:
    """Inference alone on the same input: frames preprocessed first, then only ``infer`` is timed."""
    source = open_source(source_spec)
    tensors = []
    try:
        while len(tensors) < frames and (read := source.read()) is not None:
            tensors.append(preprocess(read.image, engine.meta)[0])
    finally:
        source.close()
    engine.infer(tensors[0])                 # warm-up
    started = time.perf_counter()
    for t in tensors:
        engine.infer(t)
    seconds = time.perf_counter() - started
    return {"frames": len(tensors), "seconds": round(seconds, 3), "fps": round(len(tensors) / seconds, 2)}


def bench(source_spec: str, model: str | Path, frames: int | None = None, outputs: Outputs = Outputs(),
          options: RunOptions = RunOptions(overlay=True), engine_threads: int | None = None) -> dict:
    """Pipeline, engine-only and sequential figures, measured one after the other in this process.

    All three use the same engine, with the pipeline's thread setting.
    """
    engine = open_engine(model, pipeline_engine_threads() if engine_threads is None else engine_threads)

    def sinks_for(fps: float) -> list[Sink]:
        # With no output asked for, poses still go through a JSON sink, so the
        # sink stage does its usual work (to /dev/null).
        return open_sinks(outputs, fps) or [JsonLinesSink(os.devnull)]
    report = {"source": source_spec, "machine": machine_info(engine)}
    probe = open_source(source_spec)
    count = frames or probe.frame_count or 300
    probe.close()
    report["engine_only"] = engine_only_fps(engine, source_spec, min(count, 200))
    for mode in ("pipeline", "sequential"):
        source = _LimitedSource(open_source(source_spec), frames)
        pipeline = Pipeline(source, engine, sinks_for(source.fps), options)
        started = time.perf_counter()
        done = pipeline.run() if mode == "pipeline" else pipeline.run_sequential()
        report[mode] = summarize(done, time.perf_counter() - started)
    engine.close()
    report["pipeline_vs_sequential"] = round(report["pipeline"]["fps"] / report["sequential"]["fps"], 3)
    report["pipeline_vs_engine_only"] = round(report["pipeline"]["fps"] / report["engine_only"]["fps"], 3)
    return report


def format_bench(report: dict) -> str:
    m = report["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores; python {m['python']}, onnxruntime {m['onnxruntime']} "
             f"({', '.join(m['providers'] or [])}), opencv {m['opencv']}, numpy {m['numpy']}",
             f"threads: {m['pipeline_threads']} pipeline stages; onnxruntime intra-op {m['engine_threads']}",
             f"model: {m['model']} at {m['input']}; source: {report['source']}",
             "",
             f"{'':22s}{'frames':>8s}{'FPS':>9s}",
             f"{'pipeline (threads)':22s}{report['pipeline']['frames']:8d}{report['pipeline']['fps']:9.1f}",
             f"{'sequential (1 thread)':22s}{report['sequential']['frames']:8d}{report['sequential']['fps']:9.1f}",
             f"{'engine only':22s}{report['engine_only']['frames']:8d}{report['engine_only']['fps']:9.1f}",
             f"pipeline / sequential = {report['pipeline_vs_sequential']:.2f}, "
             f"pipeline / engine only = {report['pipeline_vs_engine_only']:.2f}",
             "",
             f"{'stage (ms)':22s}{'pipe med':>9s}{'pipe p95':>9s}{'seq med':>9s}{'seq p95':>9s}"]
    for stage, p in report["pipeline"]["stages"].items():
        s = report["sequential"]["stages"][stage]
        lines.append(f"{stage:22s}{p['median_ms']:9.2f}{p['p95_ms']:9.2f}{s['median_ms']:9.2f}{s['p95_ms']:9.2f}")
    for mode in ("pipeline", "sequential"):
        lat = report[mode]["latency"]
        lines.append(f"{'latency ' + mode:22s}{lat['median_ms']:9.2f}{lat['p95_ms']:9.2f}  (capture to output; "
                     f"max {lat['max_ms']:.1f})")
    return "\n".join(lines)


# --- demo


def demo(out_dir: Path, frames: int = 90, seed: int = 7, people: int = 4, model: str | Path = DEFAULT_MODEL) -> dict:
    """Make a synthetic video of moving people, run the pipeline on it, write video and JSON lines."""
    from rtpose.synthetic.video import write_video
    out_dir.mkdir(parents=True, exist_ok=True)
    video = write_video(out_dir / "people.mp4", seed, num_frames=frames, width=640, height=360, fps=15,
                        num_people=people, progress=Progress(frames, "making video", "frame").callback())
    outputs = Outputs(video=out_dir / "people_poses.mp4", json_lines=out_dir / "people_poses.jsonl")
    summary = run(str(video), model, outputs)
    return {"input": video, "ground_truth": video.with_suffix(".json"), "outputs": outputs, "summary": summary}
