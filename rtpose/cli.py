"""The ``rtpose`` command line.

The runtime commands import no torch. Training, evaluation of checkpoints and
export need the ``train`` extra; their modules are imported inside the
commands, so ``rtpose --help`` and the runtime stay light.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

# FFmpeg inside OpenCV prints its own lines for every damaged packet and for
# each encoder it probes; rtpose reports such problems itself, in one line.
# Set before cv2 is first used; a user's own setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")

import typer  # noqa: E402

from rtpose.progress import Progress  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Real-time multi-person pose estimation.")
synth_app = typer.Typer(no_args_is_help=True, help="Make synthetic people: COCO-format datasets and videos.")
app.add_typer(synth_app, name="synth")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def clean_errors(fn):
    """Bad input ends in one line on stderr and a non-zero exit, never a traceback.

    ``RTPOSE_DEBUG=1`` shows the traceback of unexpected errors.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except ModuleNotFoundError as exc:
            _fail(f"{exc.name} is not installed; this command needs the training extra: "
                  f"pip install 'rtpose[train]'")
        except (ValueError, RuntimeError, OSError) as exc:
            if os.environ.get("RTPOSE_DEBUG"):
                raise
            _fail(str(exc) or type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for the user
            if os.environ.get("RTPOSE_DEBUG"):
                raise
            _fail(f"{type(exc).__name__}: {exc} (RTPOSE_DEBUG=1 shows the traceback)")
    return wrapper


@synth_app.command("dataset")
@clean_errors
def synth_dataset(
    out: Annotated[Path, typer.Argument(help="Folder to write images/ and annotations.json into.")],
    images: Annotated[int, typer.Option(help="Number of images.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same dataset.")] = 0,
    width: int = 320,
    height: int = 256,
    min_people: int = 1,
    max_people: int = 6,
) -> None:
    """A COCO-format keypoint dataset of rendered people."""
    from rtpose.synthetic.scene import SceneConfig, write_dataset
    config = SceneConfig(width=width, height=height, min_people=min_people, max_people=max_people)
    path = write_dataset(out, images, seed, config, progress=Progress(images, "synth", "img").callback())
    typer.echo(f"wrote {images} images and {path}")


@synth_app.command("video")
@clean_errors
def synth_video(
    out: Annotated[Path, typer.Argument(help="Video file to write (.mp4); ground truth goes beside it as .json.")],
    frames: int = 90,
    seed: int = 0,
    width: int = 640,
    height: int = 360,
    fps: int = 15,
    people: int = 3,
) -> None:
    """A short video of people walking, turning and waving, with ground-truth keypoints and identities."""
    from rtpose.synthetic.video import write_video
    path = write_video(out, seed, num_frames=frames, width=width, height=height, fps=fps, num_people=people,
                       progress=Progress(frames, "synth video", "frame").callback())
    typer.echo(f"wrote {path} and {path.with_suffix('.json')}")


@synth_app.command("frames")
@clean_errors
def synth_frames(
    out: Annotated[Path, typer.Argument(help="Folder to write images/ and annotations.json into.")],
    videos: Annotated[int, typer.Option(help="Number of videos to take frames from.")] = 60,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 90,
    step: Annotated[int, typer.Option(help="Keep every N-th frame.")] = 3,
    seed: int = 100,
) -> None:
    """A COCO-format dataset of frames from videos of moving people (for training beside still scenes)."""
    from rtpose.synthetic.video import write_video_dataset
    path = write_video_dataset(out, videos, seed, num_frames=frames, frame_step=step,
                               progress=Progress(videos, "synth frames", "video").callback())
    typer.echo(f"wrote {path}")


@app.command()
@clean_errors
def train(
    config: Annotated[Path, typer.Argument(help="Flat YAML experiment config (see configs/).")],
    resume: Annotated[Optional[Path], typer.Option(help="Checkpoint to continue from.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override the config's epochs.")] = None,
    output_dir: Annotated[Optional[str], typer.Option(help="Override the config's output_dir.")] = None,
) -> None:
    """Train the bottom-up model on COCO-format keypoint data."""
    from trainer.config import load_config
    from trainer.train import train as run_training
    cfg = load_config(config, epochs=epochs, output_dir=output_dir)
    last = run_training(cfg, resume=resume, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"checkpoint: {last}")


@app.command("eval")
@clean_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="A checkpoint (.pt) or an exported model (.onnx).")],
    annotations: Annotated[Path, typer.Option(help="COCO-format keypoint annotation file.")],
    images: Annotated[Optional[Path], typer.Option(help="Image folder (default: <annotations dir>/images).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the figures as JSON here.")] = None,
    results_out: Annotated[Optional[Path], typer.Option("--results", help="Write COCO results here.")] = None,
    batch_size: int = 8,
) -> None:
    """COCO keypoint AP/AR of a model on a dataset, through pycocotools."""
    from trainer.annotations import load_keypoint_set
    from trainer.evaluate import evaluate as run_eval
    engine = _open_any_engine(model)
    kset = load_keypoint_set(annotations, images)
    with Progress(len(kset), "eval", "img") as bar:
        result = run_eval(engine, kset, batch_size=batch_size, progress=bar.update)
    typer.echo(result.table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"model": str(model), "annotations": str(annotations),
                                        "images": len(kset), **result.stats}, indent=2) + "\n")
        typer.echo(f"wrote {json_out}")
    if results_out:
        results_out.parent.mkdir(parents=True, exist_ok=True)
        results_out.write_text(json.dumps(result.results))


def _open_any_engine(model: Path):
    if model.suffix in (".pt", ".pth"):
        from trainer.checkpoint import CheckpointEngine
        return CheckpointEngine.from_file(model)
    from rtpose.engine import open_engine
    return open_engine(model)


@app.command()
@clean_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by rtpose train.")],
    output: Annotated[Path, typer.Option(help="File to write.")],
    format: Annotated[str, typer.Option("--format", help="Export format (see export/formats.py).")] = "onnx",
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (>= 17).")] = None,
) -> None:
    """Export a checkpoint, with the model's metadata inside, and check it against torch."""
    from export.formats import check_request
    fmt = check_request(format, {"opset": opset})
    from export.onnx_export import DEFAULT_OPSET, check_parity, export_onnx
    if fmt.name == "onnx":
        path = export_onnx(checkpoint, output, opset=opset or DEFAULT_OPSET)
        typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        typer.echo(f"parity: {check_parity(checkpoint, path)}")


HeatmapThreshold = Annotated[Optional[float], typer.Option(help="Decoder: lowest keypoint score (model default).")]
TopK = Annotated[Optional[int], typer.Option(help="Decoder: peaks kept per keypoint type.")]
MaxOffsetDistance = Annotated[Optional[float], typer.Option(help="Decoder: map pixels a guide may miss by.")]
PersonThreshold = Annotated[Optional[float], typer.Option(help="Decoder: lowest person score.")]
MaxPersons = Annotated[Optional[int], typer.Option(help="Decoder: most people per frame.")]
ModelOption = Annotated[Path, typer.Option(help="Model file (.onnx); default: the shipped model.")]
EngineThreads = Annotated[Optional[int], typer.Option(
    help="CPU threads for inference (default: half the cores; 0: the engine's own default).")]


@app.command()
@clean_errors
def run(
    source: Annotated[str, typer.Option(help="Video file, image, image folder, or camera (0, camera, camera:1).")],
    model: ModelOption = None,
    output: Annotated[Optional[Path], typer.Option(help="Annotated video to write (.mp4, .avi).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="JSON lines of poses, one line per frame.")] = None,
    show: Annotated[bool, typer.Option(help="Show the annotated frames in a window (q quits).")] = False,
    overlay: Annotated[bool, typer.Option(help="Draw FPS and latency on the frames.")] = True,
    engine_threads: EngineThreads = None,
    heatmap_threshold: HeatmapThreshold = None,
    top_k: TopK = None,
    max_offset_distance: MaxOffsetDistance = None,
    person_threshold: PersonThreshold = None,
    max_persons: MaxPersons = None,
) -> None:
    """Estimate poses on a video, images or a camera; write an annotated video and/or JSON lines."""
    from rtpose.pipeline import RunOptions
    from rtpose.runner import DEFAULT_MODEL, Outputs, run as run_pipeline
    model = model or DEFAULT_MODEL
    knobs = {"heatmap_threshold": heatmap_threshold, "top_k": top_k, "max_offset_distance": max_offset_distance,
             "person_threshold": person_threshold, "max_persons": max_persons}
    decoder = {k: v for k, v in knobs.items() if v is not None}
    if not (output or json_out or show):
        typer.echo("note: no --output, --json or --show given; poses are computed and not kept", err=True)
    summary = run_pipeline(source, model, Outputs(output, json_out, show), RunOptions(decoder=decoder, overlay=overlay),
                           engine_threads=engine_threads)
    typer.echo(f"{summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} FPS)")
    for path in (output, json_out):
        if path:
            typer.echo(f"wrote {path}")


@app.command()
@clean_errors
def bench(
    source: Annotated[str, typer.Option(help="Video file, image folder or camera to measure on.")],
    model: ModelOption = None,
    frames: Annotated[Optional[int], typer.Option(help="Use only the first N frames.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the figures as JSON here.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Also write the annotated video (sink cost included).")] = None,
    engine_threads: EngineThreads = None,
) -> None:
    """FPS and per-stage latency: threaded pipeline, the same work in one thread, and the engine alone."""
    from rtpose.runner import DEFAULT_MODEL, Outputs, bench as run_bench, format_bench
    report = run_bench(source, model or DEFAULT_MODEL, frames, Outputs(video=output), engine_threads=engine_threads)
    typer.echo(format_bench(report))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        typer.echo(f"wrote {json_out}")


@app.command()
@clean_errors
def demo(
    out_dir: Annotated[Path, typer.Option(help="Folder for the demo video and its outputs.")] = Path("rtpose-demo"),
    frames: int = 90,
    people: int = 4,
    seed: int = 7,
) -> None:
    """Everything on a fresh machine: make a video of synthetic people, run the shipped model, write the results."""
    from rtpose.runner import demo as run_demo
    result = run_demo(out_dir, frames=frames, seed=seed, people=people)
    s = result["summary"]
    typer.echo(f"input video:     {result['input']} (ground truth: {result['ground_truth']})")
    typer.echo(f"annotated video: {result['outputs'].video}")
    typer.echo(f"poses:           {result['outputs'].json_lines}")
    typer.echo(f"{s['frames']} frames at {s['fps']:.1f} FPS end to end; "
               f"latency median {s['latency']['median_ms']:.0f} ms")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
