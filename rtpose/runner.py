"""What ``rtpose run``, ``rtpose bench`` and ``rtpose demo`` do, without the command line."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

import rtpose
from rtpose.engine import Engine, open_engine
from rtpose.estimate import estimate
from rtpose.pipeline import THREADS, Pipeline, RunOptions, close_all
from rtpose.preprocess import preprocess
from rtpose.progress import Progress
from rtpose.sinks import JsonLinesSink, Sink, VideoSink, WindowSink
from rtpose.sources import Reconnect, Source, SourceError, open_source
from rtpose.stats import summarize
from rtpose.topdown import TopDown, boxes_from_people, is_top_down

DEFAULT_MODEL = Path(rtpose.__file__).parent / "models" / "default.onnx"
LIVE_BENCH_FRAMES = 300   # a live source has no end: bench measures this many frames unless told
ENGINE_ONLY_FRAMES = 200  # frames bench keeps from the pipeline run to time the engine alone on


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

    def for_source(self, index: int, count: int) -> "Outputs":
        """With several sources each writes its own files: ``out.mp4`` -> ``out.0.mp4``, ``out.1.mp4``..."""
        if count == 1:
            return self

        def numbered(path: Path | None) -> Path | None:
            return path.with_name(f"{path.stem}.{index}{path.suffix}") if path else None
        return Outputs(numbered(self.video), numbered(self.json_lines), self.show)


def open_sinks(outputs: Outputs, fps: float, title: str = "rtpose") -> list[Sink]:
    sinks: list[Sink] = []
    try:
        if outputs.video:
            sinks.append(VideoSink(outputs.video, fps))
        if outputs.json_lines:
            sinks.append(JsonLinesSink(outputs.json_lines))
        if outputs.show:
            sinks.append(WindowSink(title))
    except Exception:
        close_all(sinks)
        raise
    return sinks


def expand_sources(specs: list[str]) -> list[str]:
    """What ``--source`` named: a ``.txt`` file stands for the sources it lists, one per line (# comments)."""
    expanded = []
    for spec in specs:
        path = Path(spec)
        if path.suffix.lower() == ".txt" and path.is_file():
            lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
            listed = [line for line in lines if line]
            if not listed:
                raise SourceError(f"{path} lists no sources")
            expanded.extend(listed)
        else:
            expanded.append(spec)
    if not expanded:
        raise SourceError("no source given")
    return expanded


def open_sources(specs: list[str], reconnect: Reconnect = Reconnect()) -> list[Source]:
    sources: list[Source] = []
    try:
        for spec in specs:
            sources.append(open_source(spec, reconnect))
    except Exception:
        close_all(sources)
        raise
    return sources


def open_run_engine(model: str | Path, engine_threads: int | None, engine_options: dict | None) -> Engine:
    """The engine for ``run`` and ``bench``: the pipeline's thread setting unless told otherwise."""
    threads = pipeline_engine_threads() if engine_threads is None else engine_threads
    return open_engine(model, threads, **(engine_options or {}))


def open_run_engines(model: str | Path, engine_threads: int | None, engine_options: dict | None,
                     person_model: str | Path | None = None) -> tuple[Engine, TopDown | None]:
    """The engine the pipeline runs on whole frames and, if ``model`` is top-down, the :class:`TopDown` over it.

    A top-down model's person boxes come from the poses of ``person_model``
    (a bottom-up model; default: the shipped one), which is then the frame engine.
    """
    engine = open_run_engine(model, engine_threads, engine_options)
    if not is_top_down(engine.meta):
        if person_model is not None:
            engine.close()
            raise ValueError(f"--person-model is for top-down models; {model} is {engine.meta.approach}")
        return engine, None
    topdown = TopDown(engine)
    try:
        person = open_run_engine(person_model or DEFAULT_MODEL, engine_threads, engine_options)
    except Exception:
        topdown.close()
        raise
    if is_top_down(person.meta):
        close_all([person, topdown])
        raise ValueError(f"the person model must be bottom-up: {person_model} is top-down too")
    return person, topdown


def build_pipeline(sources: list[Source], engine: Engine, outputs: Outputs, options: RunOptions,
                   topdown: TopDown | None = None) -> Pipeline:
    """Each opened source with its own sinks; the sources are closed if a sink cannot be opened."""
    sinks: list[list[Sink]] = []
    try:
        for i, source in enumerate(sources):
            sinks.append(open_sinks(outputs.for_source(i, len(sources)), source.fps, f"rtpose: {source.name}"))
    except Exception:
        close_all(s for group in sinks for s in group)
        close_all(sources)
        raise
    return Pipeline(sources, engine, sinks, options, topdown=topdown)


def run(source_specs: list[str] | str, model: str | Path, outputs: Outputs, options: RunOptions = RunOptions(),
        progress: bool = True, engine_threads: int | None = None, reconnect: Reconnect = Reconnect(),
        engine_options: dict | None = None, person_model: str | Path | None = None) -> dict:
    """Run the pipeline over one or more sources: :func:`rtpose.stats.summarize`'s figures plus ``error``.

    ``error`` says why a source ended early (None if none did); any other failure raises.
    ``person_model``: for a top-down ``model``, the bottom-up model whose poses give the boxes.
    """
    specs = expand_sources([source_specs] if isinstance(source_specs, str) else list(source_specs))
    engine, topdown = open_run_engines(model, engine_threads, engine_options, person_model)
    try:
        pipeline = build_pipeline(open_sources(specs, reconnect), engine, outputs, options, topdown)
    except Exception:
        close_all([engine, topdown])
        raise
    counts = [s.frame_count for s in pipeline.sources]
    total = sum(counts) if all(counts) else None
    if total and options.max_frames:
        total = min(total, options.max_frames)
    bar = Progress(total, "run", "frame") if progress and total else None
    pipeline.on_frame = (lambda f: bar.update(1)) if bar else None
    started = time.perf_counter()
    error = None
    try:
        frames = pipeline.run()
    except SourceError as exc:
        # A source that broke or gave up: what came before is written and
        # counted like a finished run, and the error is reported with it.
        frames, error = pipeline.frames, str(exc)
    finally:
        if bar:
            bar.close()
        close_all([engine, topdown])
    summary = summarize(frames, time.perf_counter() - started, pipeline.source_report())
    return {**summary, "error": error}


# --- bench


def machine_info(engine: Engine, topdown: TopDown | None = None) -> dict:
    model = f"{engine.meta.architecture} at {engine.meta.input_width}x{engine.meta.input_height}"
    if topdown:
        td = topdown.meta
        model = f"{td.architecture} at {td.input_width}x{td.input_height} per person, boxes from {model}"
    return {
        "cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
        "rtpose": rtpose.__version__, "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
        "numpy": np.__version__, "providers": getattr(engine, "providers", None),
        "engine_threads": getattr(engine, "threads", None), "pipeline_threads": len(THREADS),
        "model": model,
    }


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _Recording:
    """A source that keeps a copy of its first ``keep`` images, so the engine alone can run on the same input."""

    def __init__(self, source: Source, keep: int) -> None:
        self.inner, self.keep, self.images = source, keep, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self):
        read = self.inner.read()
        if read is not None and len(self.images) < self.keep:
            self.images.append(read.image.copy())
        return read


def engine_only_fps(engine: Engine, images: list[np.ndarray], topdown: TopDown | None = None) -> dict:
    """Inference alone on the same input: frames preprocessed first, then only ``infer`` is timed.

    With a top-down model, each frame's person crops are cut first too, and
    its inference on them is timed with the frame's.
    """
    tensors = [preprocess(image, engine.meta)[0] for image in images]
    crops = [_person_crops(engine, topdown, image) for image in images] if topdown else [[] for _ in images]
    engine.infer(tensors[0])                 # warm-up
    started = time.perf_counter()
    for t, person_batches in zip(tensors, crops):
        engine.infer(t)
        for batch in person_batches:
            topdown.engine.infer(batch)
    seconds = time.perf_counter() - started
    return {"frames": len(tensors), "seconds": round(seconds, 3), "fps": round(len(tensors) / seconds, 2)}


def _person_crops(engine: Engine, topdown: TopDown, image: np.ndarray) -> list[np.ndarray]:
    """The top-down model's input batches for one frame, as the pipeline would make them."""
    people = estimate(engine, [image])[0]
    return topdown.inputs(topdown.crops(image, boxes_from_people(people)[0]).images)


def bench(source_specs: list[str] | str, model: str | Path, frames: int | None = None,
          outputs: Outputs = Outputs(), options: RunOptions = RunOptions(overlay=True, render=True),
          engine_threads: int | None = None, reconnect: Reconnect = Reconnect(),
          engine_options: dict | None = None, person_model: str | Path | None = None) -> dict:
    """Pipeline, engine-only and sequential figures, measured one after the other in this process.

    All three use the same engine, with the pipeline's thread setting, and the
    same input: the engine alone runs on frames recorded during the pipeline
    run, so a live stream is measured once. The sequential run needs to read
    the sources again and is left out for live sources, which cannot replay.
    """
    specs = expand_sources([source_specs] if isinstance(source_specs, str) else list(source_specs))
    engine, topdown = open_run_engines(model, engine_threads, engine_options, person_model)
    # With no output asked for, poses still go through a JSON sink, so the sink
    # stage does its usual work (to /dev/null).
    outputs = outputs if (outputs.video or outputs.json_lines) else Outputs(json_lines=Path(os.devnull))
    report = {"sources": specs, "machine": machine_info(engine, topdown), "decode_processes": options.decode_processes}
    try:
        recorded = [_Recording(s, ENGINE_ONLY_FRAMES) for s in open_sources(specs, reconnect)]
        live = any(s.live for s in recorded)
        options = replace(options, max_frames=frames or (LIVE_BENCH_FRAMES if live else None))
        pipeline = build_pipeline(recorded, engine, outputs, options, topdown)
        done = pipeline.run()
        report["pipeline"] = summarize(done, time.perf_counter() - pipeline.running_since, pipeline.source_report())
        images = [im for r in recorded for im in r.images][:ENGINE_ONLY_FRAMES]
        report["engine_only"] = engine_only_fps(engine, images, topdown)
        if not live:
            sequential = build_pipeline(open_sources(specs, reconnect), engine, outputs, options, topdown)
            started = time.perf_counter()
            done = sequential.run_sequential()
            report["sequential"] = summarize(done, time.perf_counter() - started, sequential.source_report())
            report["pipeline_vs_sequential"] = round(report["pipeline"]["fps"] / report["sequential"]["fps"], 3)
    finally:
        close_all([engine, topdown])
    report["pipeline_vs_engine_only"] = round(report["pipeline"]["fps"] / report["engine_only"]["fps"], 3)
    stages = report["pipeline"]["stages"]
    work = sum(stages[s]["median_ms"] for s in ("inference", "decode", "top-down") if s in stages)
    report["latency_p95_vs_inference_plus_decode"] = round(report["pipeline"]["latency"]["p95_ms"] / work, 2)
    return report


def format_bench(report: dict) -> str:
    m, pipe = report["machine"], report["pipeline"]
    seq = report.get("sequential")
    lines = [f"machine: {m['cpu']}, {m['cores']} cores; python {m['python']}, onnxruntime {m['onnxruntime']} "
             f"({', '.join(m['providers'] or [])}), opencv {m['opencv']}, numpy {m['numpy']}",
             f"threads: {m['pipeline_threads']} pipeline stages"
             + (f", {report['decode_processes']} decode processes" if report.get("decode_processes") else "")
             + f"; the engine's CPU threads {m['engine_threads']}",
             f"model: {m['model']}; sources: {', '.join(report['sources'])}",
             "",
             f"{'':22s}{'frames':>8s}{'FPS':>9s}",
             f"{'pipeline (threads)':22s}{pipe['frames']:8d}{pipe['fps']:9.1f}"]
    if seq:
        lines.append(f"{'sequential (1 thread)':22s}{seq['frames']:8d}{seq['fps']:9.1f}")
    lines.append(f"{'engine only':22s}{report['engine_only']['frames']:8d}{report['engine_only']['fps']:9.1f}")
    ratios = [f"pipeline / engine only = {report['pipeline_vs_engine_only']:.2f}"]
    if seq:
        ratios.insert(0, f"pipeline / sequential = {report['pipeline_vs_sequential']:.2f}")
    lines += [", ".join(ratios), "", f"{'stage (ms)':22s}{'pipe med':>9s}{'pipe p95':>9s}"
              + (f"{'seq med':>9s}{'seq p95':>9s}" if seq else "")]
    for stage, p in pipe["stages"].items():
        row = f"{stage:22s}{p['median_ms']:9.2f}{p['p95_ms']:9.2f}"
        if seq:
            row += f"{seq['stages'][stage]['median_ms']:9.2f}{seq['stages'][stage]['p95_ms']:9.2f}"
        lines.append(row)
    for mode, figures in (("pipeline", pipe), ("sequential", seq)):
        if figures:
            lat = figures["latency"]
            lines.append(f"{'latency ' + mode:22s}{lat['median_ms']:9.2f}{lat['p95_ms']:9.2f}  (capture to output; "
                         f"max {lat['max_ms']:.1f})")
    work = "inference + decode" + (" + top-down" if "top-down" in pipe["stages"] else "")
    lines.append(f"latency p95 / ({work} medians) = {report['latency_p95_vs_inference_plus_decode']:.2f}")
    depths = ", ".join(f"{q} {d['mean']:.1f}/{d['max']}" for q, d in pipe["queue_depths"].items())
    lines.append(f"queue depths (mean/max): {depths}; batch mean {pipe['batch']['mean']:.1f}")
    for s in pipe["sources"]:
        lines.append(f"source {s['source']}: {s['policy']} frames, read {s['read']}, dropped {s['dropped']}, "
                     f"written {s['written']}, reconnects {s['reconnects']}")
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
