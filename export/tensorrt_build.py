"""ONNX -> an rtpose TensorRT engine file (header with the model's metadata and build record + plan).

Thin on purpose: parse the ONNX, one optimization profile for a batch range,
a timing cache, build, write. The network is created strongly typed:
TensorRT 11 has no FP16/INT8 builder flags and no calibrators, the precision
is the ONNX graph's: FP32 as rtpose exports it, FP16 from
``--precision fp16`` (converted here, export/precision.py), INT8 from the Q/DQ
model ``rtpose calib`` writes. ``STRONGLY_TYPED`` is what 10.x needs for
that, and 11.x still accepts it (deprecated, ignored: always on there).

The engine file's header records how it was built (precision, batch range,
TensorRT version, workspace, timing cache, source ONNX and its SHA-256), and
the default file name says it: ``<model>_b1-8_int8.engine``. The timing cache
(TensorRT's record of which kernels were fastest on this GPU) is kept beside
the engine by default and reused by the next build; one from another TensorRT
version or GPU is set aside with a warning, not trusted.

By default the engine takes letterboxed ``uint8`` BGR pixels and normalises
in its first layers, on the GPU (see ``export/input_graph.py``).

Status: tested against ``tests/fakes/tensorrt.py`` only; not yet run with a
real TensorRT on a GPU.
"""

from __future__ import annotations

import datetime
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import tensorrt as trt

import rtpose
from export.formats import ExportError
from export.input_graph import add_uint8_input
from export.onnx_file import read_onnx_meta
from export.precision import convert_fp16, graph_precision
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.engine.tensorrt_engine import MESSAGES, TensorRTEngine
from rtpose.engine.tensorrt_file import TENSORRT_SUFFIXES, write_engine_file
from rtpose.model_meta import FLOAT32_NCHW_RGB, INPUT_FORMATS, UINT8_NHWC_BGR
from rtpose.preprocess import normalize

DEFAULT_MIN_BATCH = 1
DEFAULT_MAX_BATCH = 8
DEFAULT_WORKSPACE_GIB = 2.0
TIMING_CACHE_NAME = "tensorrt.timing.cache"      # beside the engine unless --timing-cache says elsewhere


def build_engine(onnx_path: str | Path, engine_path: str | Path, max_batch: int = DEFAULT_MAX_BATCH,
                 workspace_gib: float = DEFAULT_WORKSPACE_GIB, min_batch: int = DEFAULT_MIN_BATCH,
                 timing_cache: str | Path | None = None, source: str | Path | None = None) -> Path:
    """Build ``engine_path`` from an rtpose ONNX model; batches min_batch..max_batch, tuned for max_batch.

    ``timing_cache``: a file to read TensorRT's timing cache from (if it
    exists) and to write it back to after the build; None: no cache.
    ``source``: what to record as the model the engine came from (default ``onnx_path``).
    """
    if min_batch < 1 or max_batch < min_batch:
        raise ExportError(f"the batch range must be 1 <= --min-batch <= --max-batch, got {min_batch}..{max_batch}")
    if workspace_gib <= 0:
        raise ExportError(f"--workspace must be positive (GiB), got {workspace_gib}")
    onnx_path = Path(onnx_path)
    data = onnx_path.read_bytes()
    model = onnx.load_from_string(data)
    meta = read_onnx_meta(model, onnx_path)

    MESSAGES.clear()
    try:
        builder = trt.Builder(MESSAGES)
    except (TypeError, RuntimeError):      # the binding's "factory function returned nullptr"
        builder = None
    if builder is None:
        raise ExportError(f"TensorRT {trt.__version__} could not start its builder: no usable NVIDIA GPU or "
                          f"driver here (TensorRT builds on the GPU the engine is for){MESSAGES.last_error()}")
    network = builder.create_network(_strongly_typed())
    parser = trt.OnnxParser(network, MESSAGES)
    if not parser.parse(data):
        errors = "; ".join(f"{parser.get_error(i).desc()} (node {parser.get_error(i).node()})"
                           for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the model: {errors or 'no reason given'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    cache, cache_note = _attach_timing_cache(config, Path(timing_cache) if timing_cache else None)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ExportError(f"{onnx_path}: input '{tensor.name}' {shape} is dynamic beyond the batch")
        if shape[0] < 0:
            # Tuned for the largest batch: the pipeline's batches are that size or 1.
            profile.set_shape(tensor.name, [min_batch, *shape[1:]], [max_batch, *shape[1:]],
                              [max_batch, *shape[1:]])
        elif not min_batch == shape[0] == max_batch:
            raise ExportError(f"{onnx_path}: input '{tensor.name}' has a fixed batch of {shape[0]}; "
                              f"export it again (the ONNX export has a dynamic batch)")
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{onnx_path}: TensorRT could not build the engine{MESSAGES.last_error()}")
    if cache is not None:
        _write_atomically(Path(timing_cache), bytes(cache.serialize()))
    meta = meta.with_versions(tensorrt=trt.__version__)
    source = Path(source) if source else onnx_path
    build = {
        "precision": graph_precision(model),
        "min_batch": min_batch, "opt_batch": max_batch, "max_batch": max_batch,
        "tensorrt": trt.__version__,
        "strongly_typed": True,
        "workspace_gib": workspace_gib,
        "input_format": meta.input_format,
        "timing_cache": str(timing_cache) if timing_cache else None,
        "timing_cache_loaded": cache_note == "loaded",
        "source": source.name,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "rtpose": rtpose.__version__,
        "built_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return write_engine_file(engine_path, meta, bytes(plan), build)


def _attach_timing_cache(config, path: Path | None):
    """TensorRT's timing cache from ``path`` (a new one if missing or unusable), attached to ``config``."""
    if path is None:
        return None, "none"
    note, cache = "new", None
    if path.is_file():
        cache = config.create_timing_cache(path.read_bytes())
        if cache is None:
            print(f"warning: the timing cache {path} is from another TensorRT version or damaged; starting a new "
                  f"one{MESSAGES.last_error()}", file=sys.stderr)
        else:
            note = "loaded"
    if cache is None:
        cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, False):          # False: a cache from another GPU is not trusted
        print(f"warning: the timing cache {path} was made on another GPU; starting a new one", file=sys.stderr)
        cache, note = config.create_timing_cache(b""), "new"
        config.set_timing_cache(cache, False)
    return cache, note


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def engine_name(source: Path, precision: str, min_batch: int, max_batch: int) -> str:
    """``<model>_b1-8_int8.engine``: what the engine was built from and how (a trailing _int8/_fp16 is not repeated)."""
    stem = source.stem
    for suffix in ("_int8", "_fp16", "_fp32"):
        stem = stem.removesuffix(suffix)
    return f"{stem}_b{min_batch}-{max_batch}_{precision}.engine"


def _strongly_typed() -> int:
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)      # a later TensorRT may drop the ignored flag


def export_tensorrt(source: str | Path, output: str | Path | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                    workspace_gib: float = DEFAULT_WORKSPACE_GIB, input_format: str = UINT8_NHWC_BGR,
                    opset: int | None = None, check: bool = True, min_batch: int = DEFAULT_MIN_BATCH,
                    precision: str | None = None, timing_cache: str | Path | None = None) -> tuple[Path, str | None]:
    """A checkpoint (exported to ONNX first; needs torch) or an rtpose ``.onnx`` -> an engine file.

    ``output``: the engine file, or a folder for the default name (None: beside
    the source); :func:`engine_name` says how it was built. ``precision``:
    fp32, fp16 (converted here) or int8 (the source must be rtpose calib's Q/DQ
    model); None: the source's own. ``timing_cache``: default
    ``tensorrt.timing.cache`` beside the engine.

    Returns the engine's path and, with ``check``, a line comparing it with
    onnxruntime on the ONNX it was built from (this runs the engine: it needs the GPU).
    """
    source = Path(source)
    if input_format not in INPUT_FORMATS:
        raise ExportError(f"unknown --input-format '{input_format}' (known: {', '.join(INPUT_FORMATS)})")
    if output is not None and Path(output).suffix and Path(output).suffix not in TENSORRT_SUFFIXES:
        raise ExportError(f"an engine file must end in {' or '.join(TENSORRT_SUFFIXES)} (the runtime picks the "
                          f"backend by it); got {Path(output).name}")
    if min_batch < 1 or max_batch < min_batch:
        raise ExportError(f"the batch range must be 1 <= --min-batch <= --max-batch, got {min_batch}..{max_batch}")
    if not source.is_file():
        raise ExportError(f"not found: {source}")
    with tempfile.TemporaryDirectory(prefix="rtpose-trt-") as tmp:
        if source.suffix == ".onnx":
            model_path = source
        else:
            from export.onnx_export import DEFAULT_OPSET, export_onnx
            model_path = export_onnx(source, Path(tmp) / "model.onnx", opset=opset or DEFAULT_OPSET)
        model = onnx.load(str(model_path))
        have_precision = graph_precision(model)
        want = precision or have_precision
        if want != have_precision:
            if not (want == "fp16" and have_precision == "fp32"):
                raise ExportError(_precision_mismatch(source, have_precision, want))
            model = convert_fp16(model, source)
            model_path = Path(tmp) / "model_fp16.onnx"
            onnx.save(model, str(model_path))
        have = read_onnx_meta(model, source).input_format
        if input_format == UINT8_NHWC_BGR and have == FLOAT32_NCHW_RGB:
            model_path = Path(tmp) / "model_uint8.onnx"
            onnx.save(add_uint8_input(model, source), str(model_path))
        elif input_format != have:
            raise ExportError(f"{source} takes '{have}' input; rtpose does not convert it to '{input_format}'")
        name = engine_name(source, want, min_batch, max_batch)
        if output is None:
            output = source.with_name(name)
        elif Path(output).is_dir() or not Path(output).suffix:
            output = Path(output) / name
        output = Path(output)
        cache = Path(timing_cache) if timing_cache else output.parent / TIMING_CACHE_NAME
        path = build_engine(model_path, output, max_batch, workspace_gib, min_batch, cache, source=source)
        return path, (check_engine_parity(model_path, path) if check else None)


def _precision_mismatch(source: Path, have: str, want: str) -> str:
    if want == "int8":
        return (f"--precision int8 builds from an INT8 Q/DQ model, and {source} is {have.upper()}: make one with "
                f"rtpose calib {source} --data <images, video or synthetic> --output model_int8.onnx")
    return (f"{source} is {have.upper()} (its precision is in the graph; engines are built strongly typed); "
            f"build it without --precision, or from the FP32 model for --precision {want}")


def check_engine_parity(onnx_path: str | Path, engine_path: str | Path, batch: int = 2, seed: int = 0) -> str:
    """The engine against onnxruntime on the ONNX it came from, on random input, as one line."""
    reference, engine = OnnxRuntimeEngine(onnx_path), TensorRTEngine(engine_path)
    try:
        batch = min(max(batch, engine.min_batch), engine.max_batch)
        rng = np.random.default_rng(seed)
        meta = engine.meta
        if meta.input_format == UINT8_NHWC_BGR:
            x = rng.integers(0, 256, (batch, meta.input_height, meta.input_width, 3), dtype=np.uint8)
            feed = x if reference.meta.input_format == UINT8_NHWC_BGR else normalize(x, meta)
        else:
            x = feed = rng.standard_normal((batch, 3, meta.input_height, meta.input_width)).astype(np.float32)
        expected, got = reference.infer(feed), engine.infer(x)
    finally:
        engine.close()
        reference.close()
    diffs = ", ".join(f"{n} {float(np.abs(a.astype(np.float64) - b).max()):.2e}"
                      for n, a, b in zip(meta.output_names, expected, got))
    return f"TensorRT vs onnxruntime, batch {batch}: max |diff| {diffs}"
