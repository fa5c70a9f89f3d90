"""ONNX -> an rtpose TensorRT engine file (header with the model's metadata + plan).

Thin on purpose: parse the ONNX, one optimization profile for the dynamic
batch, build, write. The network is created strongly typed: TensorRT 11 has
no FP16/INT8 builder flags and no calibrators, the precision is the ONNX
graph's (float32 as rtpose exports it; a graph with FP16 or Q/DQ nodes builds
as such). ``STRONGLY_TYPED`` is what 10.x needs for that, and 11.x still
accepts it (deprecated, ignored: always on there).

By default the engine takes letterboxed ``uint8`` BGR pixels and normalises
in its first layers, on the GPU (see ``export/input_graph.py``).

Status: tested against ``tests/fakes/tensorrt.py`` only; not yet run with a
real TensorRT on a GPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import tensorrt as trt

from export.formats import ExportError
from export.input_graph import add_uint8_input, read_onnx_meta
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.engine.tensorrt_engine import MESSAGES, TensorRTEngine
from rtpose.engine.tensorrt_file import TENSORRT_SUFFIXES, write_engine_file
from rtpose.model_meta import FLOAT32_NCHW_RGB, INPUT_FORMATS, UINT8_NHWC_BGR
from rtpose.preprocess import normalize

DEFAULT_MAX_BATCH = 8
DEFAULT_WORKSPACE_GIB = 2.0


def build_engine(onnx_path: str | Path, engine_path: str | Path, max_batch: int = DEFAULT_MAX_BATCH,
                 workspace_gib: float = DEFAULT_WORKSPACE_GIB) -> Path:
    """Build ``engine_path`` from an rtpose ONNX model; batches 1..max_batch, tuned for max_batch."""
    if max_batch < 1:
        raise ExportError(f"--max-batch must be at least 1, got {max_batch}")
    if workspace_gib <= 0:
        raise ExportError(f"--workspace must be positive (GiB), got {workspace_gib}")
    onnx_path = Path(onnx_path)
    data = onnx_path.read_bytes()
    meta = read_onnx_meta(onnx.load_from_string(data), onnx_path)

    MESSAGES.clear()
    builder = trt.Builder(MESSAGES)
    network = builder.create_network(_strongly_typed())
    parser = trt.OnnxParser(network, MESSAGES)
    if not parser.parse(data):
        errors = "; ".join(f"{parser.get_error(i).desc()} (node {parser.get_error(i).node()})"
                           for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the model: {errors or 'no reason given'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise ExportError(f"{onnx_path}: input '{tensor.name}' {shape} is dynamic beyond the batch")
        if shape[0] < 0:
            # Tuned for the largest batch: the pipeline's batches are that size or 1.
            profile.set_shape(tensor.name, [1, *shape[1:]], [max_batch, *shape[1:]], [max_batch, *shape[1:]])
        elif shape[0] != max_batch:
            raise ExportError(f"{onnx_path}: input '{tensor.name}' has a fixed batch of {shape[0]}; "
                              f"export it again (the ONNX export has a dynamic batch)")
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{onnx_path}: TensorRT could not build the engine{MESSAGES.last_error()}")
    meta = meta.with_versions(tensorrt=trt.__version__)
    return write_engine_file(engine_path, meta, bytes(plan))


def _strongly_typed() -> int:
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)      # a later TensorRT may drop the ignored flag


def export_tensorrt(source: str | Path, output: str | Path, max_batch: int = DEFAULT_MAX_BATCH,
                    workspace_gib: float = DEFAULT_WORKSPACE_GIB, input_format: str = UINT8_NHWC_BGR,
                    opset: int | None = None, check: bool = True) -> tuple[Path, str | None]:
    """A checkpoint (exported to ONNX first; needs torch) or an rtpose ``.onnx`` -> an engine file.

    Returns the engine's path and, with ``check``, a line comparing it with
    onnxruntime on the ONNX it was built from (this runs the engine: it needs the GPU).
    """
    source, output = Path(source), Path(output)
    if input_format not in INPUT_FORMATS:
        raise ExportError(f"unknown --input-format '{input_format}' (known: {', '.join(INPUT_FORMATS)})")
    if output.suffix not in TENSORRT_SUFFIXES:
        raise ExportError(f"an engine file must end in {' or '.join(TENSORRT_SUFFIXES)} (the runtime picks the "
                          f"backend by it); got {output.name}")
    if not source.is_file():
        raise ExportError(f"not found: {source}")
    with tempfile.TemporaryDirectory(prefix="rtpose-trt-") as tmp:
        if source.suffix == ".onnx":
            model_path = source
        else:
            from export.onnx_export import DEFAULT_OPSET, export_onnx
            model_path = export_onnx(source, Path(tmp) / "model.onnx", opset=opset or DEFAULT_OPSET)
        model = onnx.load(str(model_path))
        have = read_onnx_meta(model, source).input_format
        if input_format == UINT8_NHWC_BGR and have == FLOAT32_NCHW_RGB:
            model_path = Path(tmp) / "model_uint8.onnx"
            onnx.save(add_uint8_input(model, source), str(model_path))
        elif input_format != have:
            raise ExportError(f"{source} takes '{have}' input; rtpose does not convert it to '{input_format}'")
        path = build_engine(model_path, output, max_batch, workspace_gib)
        return path, (check_engine_parity(model_path, path) if check else None)


def check_engine_parity(onnx_path: str | Path, engine_path: str | Path, batch: int = 2, seed: int = 0) -> str:
    """The engine against onnxruntime on the ONNX it came from, on random input, as one line."""
    reference, engine = OnnxRuntimeEngine(onnx_path), TensorRTEngine(engine_path)
    try:
        batch = min(batch, engine.max_batch)
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
