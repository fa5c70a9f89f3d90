"""Preprocessing in the graph: a uint8 NHWC BGR input in front of an rtpose ONNX model.

An exported model takes ``float32 [N, 3, H, W]`` RGB, normalised on the host.
:func:`add_uint8_input` puts five nodes in front of it so that it takes the
letterboxed pixels as OpenCV gives them, ``uint8 [N, H, W, 3]`` BGR::

    image (uint8 NHWC BGR) -> Cast(float) -> Gather(channels 2, 1, 0) -> Sub(mean) -> Div(std)
        -> Transpose(0, 3, 1, 2) -> the model's old input

The steps and their order are those of :func:`rtpose.preprocess.normalize`,
so both input formats give the same network input to the last bit. Why in the
graph: with TensorRT the host then uploads a quarter of the bytes and the
GPU does the arithmetic, with no CUDA kernels or cupy of rtpose's own; any
backend that runs the ONNX (onnxruntime on CPU too) runs the same nodes.
The metadata's ``input_format`` says which input a model file takes, and
:func:`rtpose.preprocess.network_input` follows it.

Needs only ``onnx`` (no torch).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.formats import ExportError
from export.onnx_file import read_onnx_meta, rewrite_onnx, write_onnx_meta
from rtpose.model_meta import FLOAT32_NCHW_RGB, INPUT_FORMATS, UINT8_NHWC_BGR

_PREFIX = "rtpose_input_"          # names of the added tensors; checked not to clash


def add_uint8_input(model: onnx.ModelProto, source: str | Path = "model") -> onnx.ModelProto:
    """A copy of ``model`` that takes ``uint8 [N, H, W, 3]`` BGR; a model that already does is returned as is."""
    meta = read_onnx_meta(model, source)
    if meta.input_format == UINT8_NHWC_BGR:
        return model
    if meta.input_format != FLOAT32_NCHW_RGB:
        raise ExportError(f"{source}: input format '{meta.input_format}' is not one rtpose converts "
                          f"(known: {', '.join(INPUT_FORMATS)})")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    name = meta.input_name
    inputs = [i for i in graph.input if i.name == name]
    if not inputs:
        raise ExportError(f"{source}: the graph has no input '{name}' named in its metadata")
    used = {t for node in graph.node for t in (*node.input, *node.output)} | {i.name for i in graph.initializer}
    if any(t.startswith(_PREFIX) for t in used):
        raise ExportError(f"{source}: tensor names starting '{_PREFIX}' are taken; is the input graph there already?")
    batch = inputs[0].type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param if batch.HasField("dim_param") else (batch.dim_value or "batch")

    normalized = _PREFIX + "normalized"
    for node in graph.node:                       # the model's nodes now read the normalised tensor
        for i, t in enumerate(node.input):
            if t == name:
                node.input[i] = normalized
    graph.initializer.extend([
        numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), _PREFIX + "bgr_to_rgb"),
        numpy_helper.from_array(np.asarray(meta.mean, dtype=np.float32), _PREFIX + "mean"),
        numpy_helper.from_array(np.asarray(meta.std, dtype=np.float32), _PREFIX + "std"),
    ])
    nodes = [
        helper.make_node("Cast", [name], [_PREFIX + "float"], to=TensorProto.FLOAT, name=_PREFIX + "cast"),
        helper.make_node("Gather", [_PREFIX + "float", _PREFIX + "bgr_to_rgb"], [_PREFIX + "rgb"], axis=3,
                         name=_PREFIX + "bgr_to_rgb"),
        helper.make_node("Sub", [_PREFIX + "rgb", _PREFIX + "mean"], [_PREFIX + "centred"], name=_PREFIX + "sub"),
        helper.make_node("Div", [_PREFIX + "centred", _PREFIX + "std"], [_PREFIX + "scaled"], name=_PREFIX + "div"),
        helper.make_node("Transpose", [_PREFIX + "scaled"], [normalized], perm=[0, 3, 1, 2],
                         name=_PREFIX + "to_nchw"),
    ]
    for i, node in enumerate(nodes):              # in front: nodes stay in topological order
        graph.node.insert(i, node)
    new_input = helper.make_tensor_value_info(name, TensorProto.UINT8,
                                              [batch_dim, meta.input_height, meta.input_width, 3])
    position = list(graph.input).index(inputs[0])
    graph.input.remove(inputs[0])
    graph.input.insert(position, new_input)
    write_onnx_meta(out, replace(meta, input_format=UINT8_NHWC_BGR))
    onnx.checker.check_model(out)
    return out


def write_uint8_input_model(source: str | Path, output: str | Path) -> Path:
    """:func:`add_uint8_input` from file to file."""
    return rewrite_onnx(source, output, lambda model: add_uint8_input(model, source))


def compare_input_formats(float_model: str | Path, uint8_model: str | Path, batch: int = 2, seed: int = 0) -> str:
    """The uint8-input model against the float one through onnxruntime, on random pixels, as one line."""
    from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
    from rtpose.preprocess import normalize
    plain, graphed = OnnxRuntimeEngine(float_model), OnnxRuntimeEngine(uint8_model)
    meta = plain.meta
    pixels = np.random.default_rng(seed).integers(0, 256, (batch, meta.input_height, meta.input_width, 3),
                                                 dtype=np.uint8)
    expected, got = plain.infer(normalize(pixels, meta)), graphed.infer(pixels)
    plain.close()
    graphed.close()
    diffs = ", ".join(f"{n} {float(np.abs(a - b).max()):.2e}" for n, a, b in zip(meta.output_names, expected, got))
    return f"uint8 input vs float32 input (onnxruntime), batch {batch}: max |diff| {diffs}"
