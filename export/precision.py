"""The precision of an rtpose ONNX graph, and FP32 -> FP16 with its parity against FP32.

TensorRT builds strongly typed (TensorRT 11 has no FP16/INT8 builder flags),
so the precision of an engine is the ONNX graph's: FP32 as exported, FP16
from :func:`convert_fp16`, INT8 from ``rtpose calib`` (Q/DQ nodes).
:func:`graph_precision` reads which one a file is.

FP16 uses onnxruntime's converter (``onnxruntime.transformers.float16``)
with the inputs and outputs kept FP32, so the runtime feeds and reads the
model exactly as before; ops onnxruntime's list says must stay FP32 (TopK,
Max, Min... of the in-graph peaks) stay FP32 behind casts. onnxruntime on CPU
has few FP16 kernels and runs much of such a model through casts: FP16 is for
GPUs (TensorRT), and the CPU figures in benchmarks/README.md say what it costs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from export.formats import ExportError
from export.onnx_file import read_onnx_meta, rewrite_onnx, write_onnx_meta

PRECISION_KEY = "rtpose_precision"       # ONNX metadata: how the precision was made (JSON)
MAX_IR_VERSION = 10
PRECISIONS = ("fp32", "fp16", "int8")


def graph_precision(model: onnx.ModelProto) -> str:
    """``int8`` (Q/DQ nodes), ``fp16`` (FP16 weights or casts to FP16) or ``fp32``."""
    graph = model.graph
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        return "int8"
    if any(i.data_type == TensorProto.FLOAT16 for i in graph.initializer) or any(
            n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)
            for n in graph.node):
        return "fp16"
    return "fp32"


def convert_fp16(model: onnx.ModelProto, source: str | Path = "model") -> onnx.ModelProto:
    """An FP16 copy of an FP32 rtpose model; inputs and outputs stay FP32, metadata is kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    meta = read_onnx_meta(model, source)
    have = graph_precision(model)
    if have != "fp32":
        raise ExportError(f"{source} is {have.upper()} already; convert the FP32 model it came from")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    converted = convert_float_to_float16(copy, keep_io_types=True)
    write_onnx_meta(converted, meta)
    for entry in list(converted.metadata_props):
        if entry.key == PRECISION_KEY:
            converted.metadata_props.remove(entry)
    converted.metadata_props.add(key=PRECISION_KEY, value=json.dumps(
        {"precision": "fp16", "converter": "onnxruntime.transformers.float16", "io": "fp32"}))
    converted.ir_version = min(converted.ir_version, MAX_IR_VERSION)
    _sort_nodes(converted.graph)
    onnx.checker.check_model(converted)
    return converted


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Topological order: the converter appends the input casts after the nodes that read them."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        progressed = False
        for node in list(pending):
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
                pending.remove(node)
                progressed = True
        if not progressed:
            raise ExportError(f"the FP16 graph has a cycle or a missing input at node '{pending[0].name}'")
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def write_fp16_model(source: str | Path, output: str | Path) -> Path:
    """:func:`convert_fp16` from file to file."""
    return rewrite_onnx(source, output, lambda model: convert_fp16(model, source))


def check_images(meta, spec: str | None = None, count: int = 8) -> tuple[list[np.ndarray], str]:
    """``count`` network inputs for a parity check (from ``spec``, or synthetic scenes), and what they are."""
    from calib.data import open_calibration_data
    data = open_calibration_data(spec or "synthetic", count, meta)
    return list(data.batches(meta)), data.describe()


def compare_precision(reference: str | Path, other: str | Path, inputs: list[np.ndarray], what: str) -> str:
    """Both models through onnxruntime on the same inputs, as one line of max |diff| per output."""
    from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
    a, b = OnnxRuntimeEngine(reference), OnnxRuntimeEngine(other)
    try:
        diffs = np.zeros(len(a.meta.output_names))
        for x in inputs:
            for k, (p, q) in enumerate(zip(a.infer(x), b.infer(x))):
                diffs[k] = max(diffs[k], float(np.abs(p.astype(np.float64) - q).max()))
    finally:
        a.close()
        b.close()
    text = ", ".join(f"{n} {d:.2e}" for n, d in zip(a.meta.output_names, diffs))
    return f"{graph_precision(onnx.load(str(other))).upper()} vs FP32 (onnxruntime) on {what}: max |diff| {text}"
