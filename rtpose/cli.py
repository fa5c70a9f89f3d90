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

from rtpose.errors import first_line  # noqa: E402
from rtpose.progress import Progress  # noqa: E402

# Help text is plain (no rich markup), so "[x1, y1, x2, y2]" prints as written.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Real-time multi-person pose estimation.")
synth_app = typer.Typer(no_args_is_help=True, help="Make synthetic people: COCO-format datasets and videos.")
app.add_typer(synth_app, name="synth")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def error_message(exc: Exception) -> str:
    """The one line an error ends a command with (after ``error: ``)."""
    if isinstance(exc, ModuleNotFoundError):
        return f"{exc.name} is not installed; this command needs the training extra: pip install 'rtpose[train]'"
    first = first_line(exc)
    if isinstance(exc, (ValueError, RuntimeError, OSError)):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first} (RTPOSE_DEBUG=1 shows the traceback)"


def clean_errors(fn):
    """Bad input ends in one line on stderr and a non-zero exit, never a traceback.

    ``RTPOSE_DEBUG=1`` shows the traceback of errors other than a missing module.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for the user
            if os.environ.get("RTPOSE_DEBUG") and not isinstance(exc, ModuleNotFoundError):
                raise
            _fail(error_message(exc))
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
    min_height: Annotated[float, typer.Option(help="Shortest standing height, pixels.")] = 40.0,
    max_height: Annotated[float, typer.Option(help="Tallest standing height, a fraction of the image height "
                                              "(crowds are capped lower, so that they fit).")] = 0.95,
) -> None:
    """A COCO-format keypoint dataset of rendered people."""
    from rtpose.synthetic.scene import SceneConfig, write_dataset
    config = SceneConfig(width=width, height=height, min_people=min_people, max_people=max_people,
                         min_height=min_height, max_height_frac=max_height)
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
    max_minutes: Annotated[Optional[float], typer.Option(
        help="Override the config's max_minutes: a wall-time budget the learning-rate schedule follows; "
             "training stops, validates and saves within it (0 = epochs alone).")] = None,
    output_dir: Annotated[Optional[str], typer.Option(help="Override the config's output_dir.")] = None,
) -> None:
    """Train the bottom-up model on COCO-format keypoint data.

    The config's ``processes: N`` trains in N processes on this machine; for
    several machines start it with torchrun:
    ``torchrun --nnodes M --nproc_per_node N -m rtpose.cli train CONFIG``.
    """
    from trainer.config import load_config
    cfg = load_config(config, epochs=epochs, max_minutes=max_minutes, output_dir=output_dir)
    if cfg.processes > 1 and "WORLD_SIZE" not in os.environ:      # not under torchrun: start them here
        from trainer.processes import train_in_processes
        last = train_in_processes(cfg, resume=resume)
    else:
        from trainer.train import train as run_training
        last = run_training(cfg, resume=resume, log=lambda m: typer.echo(m, err=True))
    if os.environ.get("RANK", "0") == "0":          # under torchrun, one line, not one per process
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
    flip: Annotated[bool, typer.Option("--flip", help="Flip test: average with the mirrored image's outputs "
                                       "(twice the inference).")] = False,
    detections: Annotated[Optional[Path], typer.Option(
        help="Top-down models: person boxes from this detector results file (COCO results: image_id, bbox, "
             "score).")] = None,
    gt_boxes: Annotated[bool, typer.Option(
        "--gt-boxes", help="Top-down models: person boxes from the annotations (the ground truth's).")] = False,
    person_model: Annotated[Optional[Path], typer.Option(
        help="Top-down models: person boxes from this bottom-up model's poses (default when no other box "
             "source is given: the shipped model), as rtpose run gets them.")] = None,
    scales: Annotated[Optional[str], typer.Option(
        help="Multi-scale (bottom-up checkpoints): input sizes relative to the model's, e.g. 0.75,1,1.5; outputs "
             "are averaged on the model's own map grid, then decoded once.")] = None,
    head_boxes: Annotated[Optional[Path], typer.Option(
        help="MPII: the official head boxes for PCKh (Simple Baselines' gt_valid.mat, needs scipy; or a JSON "
             "list of [x1, y1, x2, y2] per person in list-file order). Without: the head segment's length.")] = None,
    heatmap_threshold: HeatmapThreshold = None,
    top_k: TopK = None,
    max_offset_distance: MaxOffsetDistance = None,
    person_threshold: PersonThreshold = None,
    max_persons: MaxPersons = None,
    fill_threshold: FillThreshold = None,
) -> None:
    """COCO keypoint AP/AR of a model on a dataset, through pycocotools (PCKh@0.5 on an MPII list file).

    The decoder options score the model as ``rtpose run`` with the same options would run it.
    """
    from dataclasses import asdict
    from rtpose.topdown import is_top_down
    from trainer.annotations import load_keypoint_set
    from trainer.evaluate import evaluate as run_eval
    engine = _open_any_engine(model)
    knobs = _decoder_knobs(heatmap_threshold, top_k, max_offset_distance, person_threshold, max_persons,
                           fill_threshold)
    # As in rtpose run: the decoder options act on the bottom-up model that decodes, the model
    # itself or, for a top-down model, the person model whose poses give the boxes.
    decoder = None if is_top_down(engine.meta) else _decoder_config(engine.meta, knobs)
    kset = load_keypoint_set(annotations, images)
    if not kset.is_coco_format and kset.skeleton.name == "mpii":
        # MPII's list files are not COCO: its own metric, as Simple Baselines reports it (a
        # top-down model on the annotated people's boxes, as there).
        if scales or detections or person_model or knobs:
            raise ValueError("on MPII list files, eval takes neither --scales, other person boxes nor decoder options")
        from trainer.pckh import evaluate_pckh, format_pckh, read_head_boxes
        heads = read_head_boxes(head_boxes, sum(len(r.keypoints) for r in kset.images)) if head_boxes else None
        table = evaluate_pckh(engine, kset, flip=flip, head_boxes=heads)
        size = "0.6 x head box diagonal" if head_boxes else "upper neck to head top"
        typer.echo(f"PCKh@0.5 (head size: {size})\n" + format_pckh(table))
        if json_out:
            _write_json(json_out, {"model": str(model), "annotations": str(annotations), "images": len(kset),
                                   "PCKh": table})
        return
    if head_boxes:
        raise ValueError("--head-boxes is for MPII list files (PCKh)")
    boxes = _box_source(engine.meta, detections, gt_boxes, person_model, knobs)
    with Progress(len(kset), "eval", "img") as bar:
        result = run_eval(engine, kset, decoder, batch_size=batch_size, progress=bar.update, flip=flip,
                          boxes=boxes, scales=_parse_scales(scales))
    typer.echo(result.table)
    if json_out:
        used = decoder or getattr(boxes, "decoder", None)      # the model's, or its person model's
        _write_json(json_out, {"model": str(model), "annotations": str(annotations), "images": len(kset),
                               **({"decoder": asdict(used)} if used else {}), **result.stats})
    if results_out:
        results_out.parent.mkdir(parents=True, exist_ok=True)
        results_out.write_text(json.dumps(result.results))


@app.command()
@clean_errors
def calib(
    model: Annotated[Path, typer.Argument(help="FP32 rtpose ONNX model (from rtpose export).")],
    data: Annotated[str, typer.Option(
        help="Calibration images: a folder, a video, a COCO-format dataset (annotations .json, or a folder "
             "holding annotations.json and images/), or 'synthetic' / 'synthetic:SEED'.")],
    output: Annotated[Optional[Path], typer.Option(help="INT8 Q/DQ model to write (default: MODEL_int8.onnx).")] = None,
    method: Annotated[str, typer.Option(
        help="percentile (99.999% of values inside the range), entropy (KL, 2048 bins) or minmax.")] = "percentile",
    images: Annotated[int, typer.Option(help="Calibration images, spread over the data.")] = 128,
    val: Annotated[Optional[Path], typer.Option(
        help="COCO-format annotations to measure AP of FP32 and INT8 on (images in <dir>/images); without it "
             "accuracy is not checked.")] = None,
    val_images: Annotated[int, typer.Option(help="Validation images used, spread over the set.")] = 200,
    max_ap_drop: Annotated[float, typer.Option(
        help="AP points INT8 may lose; the most sensitive layers stay FP32 until it is met.")] = 1.0,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Where calibration ranges are cached (default: .rtpose-calib-cache beside the output).")] = None,
) -> None:
    """INT8 calibration: a symmetric INT8 Q/DQ model (onnxruntime on CPU, TensorRT) with its accuracy measured."""
    from calib.calibrate import calibrate as run_calibration
    report = run_calibration(model, data, output, method=method, images=images, val=val, val_images=val_images,
                             max_ap_drop=max_ap_drop, cache_dir=cache_dir, log=lambda m: typer.echo(m, err=True))
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"wrote {report.output} ({report.output.stat().st_size / 1e6:.1f} MB)")


def _write_json(path: Path, figures: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    typer.echo(f"wrote {path}")


def _parse_scales(text: str | None) -> tuple[float, ...] | None:
    """``--scales`` as numbers (engines_at_scales checks that they are positive)."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--scales is a comma-separated list of numbers, e.g. 0.75,1,1.5, not '{text}'") from None


def _box_source(meta, detections: Path | None, gt_boxes: bool, person_model: Path | None, knobs: dict):
    """Where a top-down model's person boxes come from; None for a bottom-up model (which takes none).

    ``knobs``: decoder options for the person model; refused where the boxes come from elsewhere.
    """
    from rtpose.topdown import is_top_down
    from trainer.evaluate import DetectionBoxes, PoseBoxes, gt_boxes as ground_truth_boxes
    given = [name for name, on in (("--detections", detections), ("--gt-boxes", gt_boxes),
                                   ("--person-model", person_model)) if on]
    if not is_top_down(meta):
        if given:
            raise ValueError(f"{', '.join(given)}: person boxes are for top-down models; this one is bottom-up")
        return None
    if len(given) > 1:
        raise ValueError(f"give one source of person boxes, not {' and '.join(given)}")
    if knobs and (detections or gt_boxes):
        raise ValueError(f"--{next(iter(knobs)).replace('_', '-')} is a decoder option for the person model; "
                         f"with {given[0]} there is none")
    if detections:
        return DetectionBoxes(detections)
    if gt_boxes:
        return ground_truth_boxes
    from rtpose.engine import open_engine
    from rtpose.runner import DEFAULT_MODEL
    person = open_engine(person_model or DEFAULT_MODEL)
    return PoseBoxes(person, _decoder_config(person.meta, knobs))


def _open_any_engine(model: Path):
    if model.suffix in (".pt", ".pth"):
        from trainer.checkpoint import CheckpointEngine
        return CheckpointEngine.from_file(model)
    from rtpose.engine import open_engine
    return open_engine(model)


@app.command()
@clean_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(
        help="Checkpoint written by rtpose train; for --format tensorrt, or onnx with --input-format, "
             "--precision or --peak-top-k, also an rtpose .onnx.")],
    output: Annotated[Optional[Path], typer.Option(
        help="File to write: .onnx, .pt2 (torch), .engine (tensorrt; default <model>_b1-8_<precision>.engine "
             "beside the source, or in the folder given).")] = None,
    format: Annotated[str, typer.Option("--format", help="onnx, torch or tensorrt (see export/formats.py).")] = "onnx",
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (>= 17).")] = None,
    max_batch: Annotated[Optional[int], typer.Option(
        help="Largest batch the model takes (torch: 256; tensorrt: 8, the batch TensorRT tunes for).")] = None,
    min_batch: Annotated[Optional[int], typer.Option(help="tensorrt: smallest batch of the profile (1).")] = None,
    workspace: Annotated[Optional[float], typer.Option(help="TensorRT builder workspace in GiB (2).")] = None,
    input_format: Annotated[Optional[str], typer.Option(
        help="float32_nchw_rgb (normalised on the host) or uint8_nhwc_bgr (pixels, normalised in the graph: "
             "on the GPU with TensorRT). Default: uint8 for tensorrt, float32 otherwise.")] = None,
    peak_top_k: Annotated[Optional[int], typer.Option(
        help="onnx: find the best N peaks per keypoint type in the graph (max-pool NMS, TopK) and output them "
             "instead of the dense maps, so decoding no longer grows with the map size; from an .onnx, "
             "add them to it.")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help="onnx: fp32 or fp16 (inputs and outputs stay FP32; checked against FP32). tensorrt: fp32, fp16 or "
             "int8 (from rtpose calib's Q/DQ model); default: the source's. INT8 ONNX: rtpose calib.")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option(
        help="tensorrt: TensorRT timing cache to reuse and update (default: tensorrt.timing.cache beside the "
             "engine).")] = None,
    input_size: Annotated[Optional[str], typer.Option(
        help="onnx, torch: the input size the file takes, WIDTHxHEIGHT (multiples of 32), if not the training "
             "size: the models are fully convolutional (e.g. 512x512 for a larger-input variant).")] = None,
    check_images: Annotated[Optional[str], typer.Option(
        help="onnx --precision fp16: images to check FP16 against FP32 on (folder, video, COCO-format dataset; "
             "default: 8 synthetic scenes).")] = None,
) -> None:
    """Export a checkpoint, with the model's metadata inside, and check it against what it came from."""
    from export.formats import ExportError, check_request, parse_input_size
    from rtpose.model_meta import UINT8_NHWC_BGR
    fmt = check_request(format, {"opset": opset, "max_batch": max_batch, "min_batch": min_batch,
                                 "workspace": workspace, "input_format": input_format, "peak_top_k": peak_top_k,
                                 "precision": precision, "timing_cache": timing_cache,
                                 "check_images": check_images, "input_size": input_size})
    if fmt.name == "tensorrt":
        _export_tensorrt(checkpoint, output, opset, max_batch, workspace, input_format, min_batch, precision,
                         timing_cache)
        return
    if output is None:
        raise ExportError(f"--format {fmt.name} needs --output (a {fmt.suffix} file)")
    if output.suffix != fmt.suffix:
        raise ExportError(f"--format {fmt.name} writes {fmt.suffix} files (the runtime picks the backend by the "
                          f"suffix); got {output.name}")
    if check_images is not None and precision != "fp16":
        raise ExportError("--check-images is for --precision fp16 (it checks FP16 against FP32)")
    size = parse_input_size(input_size) if input_size else None
    if size and checkpoint.suffix == ".onnx":
        raise ExportError("--input-size needs the checkpoint: an .onnx file's input size is fixed")
    if fmt.name == "torch":
        _export_torch(checkpoint, output, max_batch, size)
    else:
        _export_onnx(checkpoint, output, opset, size, precision == "fp16", check_images,
                     input_format == UINT8_NHWC_BGR, peak_top_k)


def _export_torch(checkpoint: Path, output: Path, max_batch: int | None, size: tuple[int, int] | None) -> None:
    from export.torch_export import DEFAULT_MAX_BATCH, check_torch_parity, export_torch
    path = export_torch(checkpoint, output, max_batch or DEFAULT_MAX_BATCH, size)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    typer.echo(f"parity: {check_torch_parity(checkpoint, path)}")


def _export_onnx(source: Path, output: Path, opset: int | None, size: tuple[int, int] | None, fp16: bool,
                 check_images: str | None, uint8_input: bool, peak_top_k: int | None) -> None:
    """Checkpoint (or .onnx) -> FP32 ONNX -> FP16 -> uint8 input -> peaks, each step checked against the last."""
    import shutil
    import tempfile
    from export.formats import ExportError
    from export.input_graph import compare_input_formats, write_uint8_input_model
    from rtpose.model_meta import UINT8_NHWC_BGR
    with tempfile.TemporaryDirectory(prefix="rtpose-onnx-") as tmp:
        if source.suffix == ".onnx":
            if not (uint8_input or peak_top_k is not None or fp16):
                raise ExportError(f"{source} is ONNX already; from an .onnx, --format onnx only converts the "
                                  f"input: --input-format {UINT8_NHWC_BGR}, the precision: --precision fp16, or "
                                  f"adds peaks: --peak-top-k N")
            current = source
        else:
            from export.onnx_export import DEFAULT_OPSET, check_parity, export_onnx
            current = export_onnx(source, Path(tmp) / "float32.onnx", opset=opset or DEFAULT_OPSET, input_size=size)
            typer.echo(f"parity: {check_parity(source, current)}")
        if fp16:
            current = _to_fp16(current, Path(tmp) / "fp16.onnx", check_images)
        if uint8_input:
            converted = write_uint8_input_model(current, Path(tmp) / "uint8.onnx")
            typer.echo(f"parity: {compare_input_formats(current, converted)}")
            current = converted
        if peak_top_k is not None:
            _add_peaks(current, output, peak_top_k)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(current, output)
    typer.echo(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")


def _to_fp16(source: Path, output: Path, images: str | None) -> Path:
    """FP16 copy (FP32 inputs and outputs) of ``source``, checked against it on images."""
    from export.onnx_file import read_onnx_meta
    from export.precision import check_images as parity_inputs, compare_precision, write_fp16_model
    import onnx
    inputs, what = parity_inputs(read_onnx_meta(onnx.load(str(source)), source), images)
    path = write_fp16_model(source, output)
    typer.echo(f"parity: {compare_precision(source, path, inputs, what)}")
    return path


def _add_peaks(source: Path, output: Path, top_k: int) -> None:
    """Peak outputs in the graph (export/peak_graph.py), checked against numpy's find_peaks first."""
    from export.peak_graph import compare_peaks, write_peak_model
    typer.echo(f"parity: {compare_peaks(source, top_k)}")
    write_peak_model(source, output, top_k)


def _export_tensorrt(source: Path, output: Path | None, opset, max_batch, workspace, input_format, min_batch,
                     precision, timing_cache) -> None:
    try:
        from export.tensorrt_build import (DEFAULT_MAX_BATCH, DEFAULT_MIN_BATCH, DEFAULT_WORKSPACE_GIB,
                                           export_tensorrt)
    except ImportError as exc:        # checked before any work: an ONNX export first would be wasted
        if (exc.name or "").split(".")[0] not in ("tensorrt", "cuda"):
            raise
        _fail(f"--format tensorrt needs TensorRT and cuda-python ({exc.name} is not importable): "
              f"pip install 'rtpose[tensorrt]' on a machine with NVIDIA's GPU driver and CUDA")
    from rtpose.engine.tensorrt_file import describe_build, read_engine_build
    from rtpose.model_meta import UINT8_NHWC_BGR
    path, parity = export_tensorrt(source, output, max_batch or DEFAULT_MAX_BATCH, workspace or DEFAULT_WORKSPACE_GIB,
                                   input_format or UINT8_NHWC_BGR, opset, min_batch=min_batch or DEFAULT_MIN_BATCH,
                                   precision=precision, timing_cache=timing_cache)
    build = read_engine_build(path)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {describe_build(build)}")
    typer.echo(f"timing cache: {build['timing_cache']} ({'reused' if build['timing_cache_loaded'] else 'new'})")
    typer.echo(f"parity: {parity}")


HeatmapThreshold = Annotated[Optional[float], typer.Option(help="Decoder: lowest keypoint score (model default).")]
TopK = Annotated[Optional[int], typer.Option(help="Decoder: peaks kept per keypoint type.")]
MaxOffsetDistance = Annotated[Optional[float], typer.Option(help="Decoder: map pixels a guide may miss by.")]
PersonThreshold = Annotated[Optional[float], typer.Option(
    help="Decoder: lowest person confidence (its keypoints' scores and share found; the size then ranks it).")]
MaxPersons = Annotated[Optional[int], typer.Option(help="Decoder: most people per frame.")]
FillThreshold = Annotated[Optional[float], typer.Option(
    help="Decoder: lowest score of a peak that fills a keypoint grouping left missing (one another person holds, "
         "as where people overlap, or a weak one); 1: no filling.")]
ModelOption = Annotated[Path, typer.Option(
    help="Model file: .onnx (onnxruntime), .engine (TensorRT) or .pt2 (torch); default: the shipped model. "
         "A top-down model (PoseResNet) runs on the person boxes of --person-model's poses.")]
PersonModel = Annotated[Optional[Path], typer.Option(
    help="With a top-down --model: the bottom-up model whose poses give the person boxes (default: the shipped "
         "model).")]
Fp16 = Annotated[bool, typer.Option(help="Torch programs (.pt2) on CUDA: run in half precision.")]
CudaGraphs = Annotated[bool, typer.Option(help="Torch programs (.pt2) on CUDA: replay CUDA graphs.")]
EngineThreads = Annotated[Optional[int], typer.Option(
    help="CPU threads for inference (default: half the cores; 0: the engine's own default).")]


SourcesOption = Annotated[list[str], typer.Option(
    "--source", help="Video file, image, image folder, camera (0, camera, camera:1) or stream (rtsp://, http://, "
    "tcp://, udp://...). Repeat for several sources, or name a .txt file listing them.")]
Policy = Annotated[Optional[str], typer.Option(
    help="latest: only the newest frame waits, late ones are dropped and counted; all: every frame. "
         "Default: latest for cameras and streams, all for files.")]
MaxBatch = Annotated[Optional[int], typer.Option(help="Frames of several sources per inference call (default: all).")]
ReconnectTimeout = Annotated[float, typer.Option(
    help="Seconds a dropped camera or stream may take to come back before the run gives it up.")]
MaxFrames = Annotated[Optional[int], typer.Option(help="Stop after this many frames.")]
InFlight = Annotated[int, typer.Option(
    help="Live sources: frames in the pipeline at once. 2: the engine runs while the previous frame is drawn and "
         "written, each frame taken just before the engine frees; 1: one frame at a time.")]
DecodeProcesses = Annotated[int, typer.Option(
    help="Decode in N worker processes (0: in the pipeline's decode thread). For a fast engine (a GPU) on a "
         "machine with cores to spare: decoding holds Python's interpreter lock, which the threads share.")]
Track = Annotated[bool, typer.Option(
    "--track/--no-track", help="Give each person an id that lasts across frames (drawn, and \"id\" in the JSON "
    "lines), for videos, cameras and streams (and image folders, whose images are then taken as a sequence).")]
Smooth = Annotated[bool, typer.Option(
    help="With tracking, smooth keypoints over time (One-Euro filter); --no-smooth writes them as decoded.")]


def _decoder_knobs(heatmap_threshold: float | None, top_k: int | None, max_offset_distance: float | None,
                   person_threshold: float | None, max_persons: int | None, fill_threshold: float | None) -> dict:
    """The decoder options given on the command line, by DecoderConfig's names."""
    knobs = {"heatmap_threshold": heatmap_threshold, "top_k": top_k, "max_offset_distance": max_offset_distance,
             "person_threshold": person_threshold, "max_persons": max_persons, "fill_threshold": fill_threshold}
    return {k: v for k, v in knobs.items() if v is not None}


def _decoder_config(meta, knobs: dict):
    """The model's decoder defaults with ``knobs`` in their place; None when no knob is given."""
    from dataclasses import replace
    return replace(meta.decoder, **knobs) if knobs else None


def _run_options(decoder: dict, overlay: bool, policy: str | None, max_batch: int | None,
                 max_frames: int | None, in_flight: int, track: bool = False, smooth: bool = True,
                 render: bool | None = None, decode_processes: int = 0):
    from rtpose.capture import POLICIES
    from rtpose.pipeline import RunOptions
    from rtpose.tracking import TrackerConfig
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"--policy must be one of {', '.join(POLICIES)}, not '{policy}'")
    if in_flight < 1:
        raise ValueError("--in-flight must be at least 1")
    if decode_processes < 0:
        raise ValueError("--decode-processes must be 0 (decode in the pipeline's thread) or more")
    # Tracking is asked for, not on by default: it costs 1.7 ms a frame at 10
    # people and 3 ms at 30 on one core (benchmarks/README.md, "Tracking"),
    # which on 2 cores took 10-30% of the FPS on vtest.avi's crowd.
    tracker = None if not track else TrackerConfig() if smooth else TrackerConfig(smoothing=None)
    return RunOptions(decoder=decoder, overlay=overlay, policy=policy, max_batch=max_batch, max_frames=max_frames,
                      in_flight=in_flight, track=tracker, render=render, decode_processes=decode_processes)


def _print_sources(summary: dict) -> None:
    for s in summary["sources"]:
        dropped = f", {s['dropped']} dropped (newest frame kept)" if s["policy"] == "latest" else ""
        back = f", reconnected after {s['reconnects']} drop(s)" if s["reconnects"] else ""
        skipped = f", {s['skipped']} damaged frames skipped" if s["skipped"] else ""
        typer.echo(f"  {s['source']}: {s['written']} frames written{dropped}{back}{skipped}")


def _queued_note(summary: dict) -> str:
    """Where every frame was kept (files), latency includes the frames' wait in the stage queues: say so."""
    if all(source["policy"] == "all" for source in summary["sources"]):
        return " (every frame kept, so this includes their wait in the queues; live sources keep only the newest)"
    return ""


@app.command()
@clean_errors
def run(
    source: SourcesOption,
    model: ModelOption = None,
    person_model: PersonModel = None,
    output: Annotated[Optional[Path], typer.Option(
        help="Annotated video to write (.mp4, .avi); with several sources, out.0.mp4, out.1.mp4...")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="JSON lines of poses, one line per frame.")] = None,
    show: Annotated[bool, typer.Option(help="Show the annotated frames in a window (q quits).")] = False,
    overlay: Annotated[bool, typer.Option(help="Draw FPS, latency and dropped frames on the frames.")] = True,
    policy: Policy = None,
    max_batch: MaxBatch = None,
    max_frames: MaxFrames = None,
    in_flight: InFlight = 2,
    decode_processes: DecodeProcesses = 0,
    track: Track = False,
    smooth: Smooth = True,
    reconnect_timeout: ReconnectTimeout = 10.0,
    engine_threads: EngineThreads = None,
    fp16: Fp16 = False,
    cuda_graphs: CudaGraphs = False,
    heatmap_threshold: HeatmapThreshold = None,
    top_k: TopK = None,
    max_offset_distance: MaxOffsetDistance = None,
    person_threshold: PersonThreshold = None,
    max_persons: MaxPersons = None,
    fill_threshold: FillThreshold = None,
) -> None:
    """Estimate poses on videos, images, cameras or streams; write annotated video and/or JSON lines."""
    from rtpose.runner import DEFAULT_MODEL, Outputs, run as run_pipeline
    from rtpose.sources import Reconnect
    model = model or DEFAULT_MODEL
    decoder = _decoder_knobs(heatmap_threshold, top_k, max_offset_distance, person_threshold, max_persons,
                           fill_threshold)
    if not (output or json_out or show):
        typer.echo("note: no --output, --json or --show given; poses are computed and not kept", err=True)
    options = _run_options(decoder, overlay, policy, max_batch, max_frames, in_flight, track, smooth,
                           decode_processes=decode_processes)
    summary = run_pipeline(source, model, Outputs(output, json_out, show), options, engine_threads=engine_threads,
                           reconnect=Reconnect(give_up_after=reconnect_timeout),
                           engine_options={"fp16": fp16, "cuda_graphs": cuda_graphs}, person_model=person_model)
    typer.echo(f"{summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} FPS); latency "
               f"median {summary['latency']['median_ms']:.0f} ms, p95 {summary['latency']['p95_ms']:.0f} ms"
               + _queued_note(summary))
    if len(summary["sources"]) > 1 or any(s["dropped"] or s["reconnects"] or s["skipped"] for s in summary["sources"]):
        _print_sources(summary)
    for path in (output, json_out):
        if path:
            typer.echo(f"wrote {path}" if len(summary["sources"]) == 1 else f"wrote {path.stem}.N{path.suffix}")
    if summary["error"]:
        _fail(summary["error"])


@app.command()
@clean_errors
def bench(
    source: SourcesOption,
    model: ModelOption = None,
    person_model: PersonModel = None,
    frames: Annotated[Optional[int], typer.Option(
        help="Use only the first N frames (live sources: default 300).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the figures as JSON here.")] = None,
    output: Annotated[Optional[Path], typer.Option(help="Also write the annotated video (sink cost included).")] = None,
    policy: Policy = None,
    max_batch: MaxBatch = None,
    in_flight: InFlight = 2,
    decode_processes: DecodeProcesses = 0,
    track: Track = False,
    reconnect_timeout: ReconnectTimeout = 10.0,
    engine_threads: EngineThreads = None,
    fp16: Fp16 = False,
    cuda_graphs: CudaGraphs = False,
    render: Annotated[bool, typer.Option(
        help="Draw people and overlay on every frame, as a run writing a video does; --no-render measures "
             "a JSON-only run, which skips drawing.")] = True,
) -> None:
    """FPS, per-stage and end-to-end latency: threaded pipeline, the same work in one thread, the engine alone."""
    from rtpose.runner import DEFAULT_MODEL, Outputs, bench as run_bench, format_bench
    from rtpose.sources import Reconnect
    options = _run_options({}, True, policy, max_batch, None, in_flight, track, render=render,
                           decode_processes=decode_processes)
    report = run_bench(source, model or DEFAULT_MODEL, frames, Outputs(video=output), options,
                       engine_threads=engine_threads, reconnect=Reconnect(give_up_after=reconnect_timeout),
                       engine_options={"fp16": fp16, "cuda_graphs": cuda_graphs}, person_model=person_model)
    typer.echo(format_bench(report))
    if json_out:
        _write_json(json_out, report)


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
               f"latency median {s['latency']['median_ms']:.0f} ms" + _queued_note(s))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
