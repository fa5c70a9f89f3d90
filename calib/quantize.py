"""Tensor ranges and the INT8 Q/DQ model, through ``onnxruntime.quantization``.

The form written is the one TensorRT takes for explicit quantization and
onnxruntime runs on CPU:

- QuantizeLinear/DequantizeLinear pairs (``QuantFormat.QDQ``), standard
  ``ai.onnx`` domain, opset of the source model (>= 17);
- INT8 activations and weights, symmetric, every zero point 0;
- weights stored as INT8 initializers, one scale per output channel (axis 0
  of a Conv weight), in 7 bits (-64..64, ``reduce_range``): an x86 CPU
  without VNNI (AVX2 alone) multiplies INT8 with VPMADDUBSW, whose 16-bit sum
  of two products saturates with full-range weights. On such a CPU the
  shipped model lost 4.4 AP points with 8-bit weights and 0.5 with 7-bit; on
  CPUs with VNNI, and with reference arithmetic, 7-bit weights lose nothing
  measurable (benchmarks/README.md, "INT8 on a CPU without VNNI");
- biases left in float: TensorRT refuses a DequantizeLinear of INT32 ("only
  activation types allowed as input to this layer"), and builds the bias in
  itself;
- one Q/DQ pair per consumer (``DedicatedQDQPair``): TensorRT wants them so;
- the model's outputs stay float: no Q/DQ after the last layers, so keypoint
  confidences keep their full resolution instead of steps of 1/127.

Ranges are computed once (``create_calibrator``, ``collect_data`` a few
images at a time so memory stays flat, ``compute_data``), written to the
cache (:mod:`calib.cache`), and every quantization after that (the full
model, one layer at a time for the sensitivity, the models with layers kept
in FP32) reads them from there through ``quantize_static``'s
``calibration_cache_path``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, create_calibrator
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from calib.data import CalibrationError

METHODS = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
           "minmax": CalibrationMethod.MinMax}
MIN_OPSET = 17
MAX_IR_VERSION = 10          # the onnxruntime releases rtpose supports do not all read newer files
CHUNK = 8                    # images per collect_data call: histograms hold every activation of a chunk
OP_TYPES = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))   # what quantize_static quantizes by default
EXTRA_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "DedicatedQDQPair": True,
    "QuantizeBias": False,
}
# Ops that only pass their (quantized) input on or read its shape: not layers of their own.
_FOLLOWERS = {"Relu", "Clip", "Shape", "Slice", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten",
              "Gather", "Split", "Identity", "MaxPool", "Pad"}


@dataclass(frozen=True)
class Settings:
    """How ranges are computed; all of it goes into the cache key."""

    method: str = "percentile"
    num_bins: int = 2048           # histogram bins (entropy, percentile); TensorRT's entropy calibrator uses 2048
    num_quantized_bins: int = 128  # entropy: the INT8 side of the KL comparison
    percentile: float = 99.999     # percentile: share of |values| the range must hold

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"unknown calibration method '{self.method}' (known: {', '.join(METHODS)})")

    def calibrator_options(self) -> dict:
        # Ranges are kept signed here (the quantizer makes them symmetric): a ReLU's output needs its
        # input's positive side alone (relu_ranges_from_inputs).
        options = {"symmetric": False}
        if self.method == "entropy":
            options.update(num_bins=self.num_bins, num_quantized_bins=self.num_quantized_bins)
        elif self.method == "percentile":
            options.update(num_bins=self.num_bins, percentile=self.percentile)
        return options

    def as_key(self) -> dict:
        return {**asdict(self), "op_types": OP_TYPES, "calibrator": self.calibrator_options(),
                "extra_options": EXTRA_OPTIONS, "relu_range": "from its input"}


@contextlib.contextmanager
def quiet():
    """onnxruntime.quantization prints progress to stdout and logs advice at WARNING; rtpose reports itself."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def prepare(model_path: Path, workdir: Path) -> Path:
    """onnxruntime's recommended pre-processing (basic graph folding, shape inference); the model as is if it fails.

    Symbolic shape inference is skipped: it is for graphs with dynamic
    sizes inside (transformers); rtpose's are fixed but for the batch, and it
    took 2.1 of the 2.2 s. On rtpose's exported graphs the rest changes no
    node (75 before and after); it is kept for models exported otherwise.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process
    out = Path(workdir) / "prepared.onnx"
    try:
        with quiet():
            quant_pre_process(str(model_path), str(out), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - symbolic shape inference gives up on some graphs; quantization does not need it
        shutil.copyfile(model_path, out)
    return out


class _Feeds(CalibrationDataReader):
    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self.name, self.batches = name, iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch}


def compute_ranges(prepared: Path, input_name: str, batches: Iterator[np.ndarray], settings: Settings,
                   workdir: Path, progress: Callable[[int], None] | None = None) -> TensorsData:
    """Run the calibration images through the model once and compute every tensor's range."""
    with quiet():
        calibrator = create_calibrator(Path(prepared), OP_TYPES,
                                       augmented_model_path=str(Path(workdir) / "augmented.onnx"),
                                       calibrate_method=METHODS[settings.method],
                                       extra_options=settings.calibrator_options())
    seen = 0
    while True:
        chunk = [b for _, b in zip(range(CHUNK), batches)]
        if not chunk:
            break
        with quiet():
            calibrator.collect_data(_Feeds(input_name, chunk))
        seen += len(chunk)
        if progress:
            progress(len(chunk))
    if not seen:
        raise CalibrationError("no calibration image could be read")
    with quiet():
        ranges = calibrator.compute_data()
    relu_ranges_from_inputs(ranges, onnx.load(str(prepared)))
    return ranges


def relu_ranges_from_inputs(ranges: TensorsData, model: onnx.ModelProto) -> None:
    """A ReLU's output takes the range of its input (its positive side): max(ReLU(x)) is max(x).

    Why: the output of a ReLU is mostly zeros, and on such a histogram the
    entropy method picks a range far too tight (on the shipped model 3.3
    where the largest value is 16, for one), clipping every strong
    activation: INT8 lost 9.3 AP points that way, and 0 with this rule. The
    method still decides the range of the ReLU's input. Min-max is unchanged
    by it; percentile moves little. TensorRT fuses Conv + ReLU and quantizes
    once after both, so one range for the pair is also what it runs.
    """
    for node in model.graph.node:
        if node.op_type != "Relu" or node.input[0] not in ranges or node.output[0] not in ranges:
            continue
        high = np.float32(max(float(np.max(ranges[node.input[0]].range_value[1])), 0.0))
        ranges[node.output[0]] = TensorData(lowest=np.array(0.0, np.float32), highest=np.array(high, np.float32))


def quantize(prepared: Path, ranges_file: Path, settings: Settings, exclude: Iterable[str] = (),
             only: Iterable[str] | None = None) -> onnx.ModelProto:
    """The Q/DQ model from cached ranges: every layer but ``exclude``, or the ``only`` ones."""
    with tempfile.TemporaryDirectory(prefix="rtpose-qdq-") as tmp:
        out = Path(tmp) / "qdq.onnx"
        with quiet():
            quantize_static(str(prepared), str(out), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=OP_TYPES, per_channel=True, reduce_range=True,   # 7-bit weights: above
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_quantize=list(only) if only is not None else None,
                            nodes_to_exclude=list(exclude), calibrate_method=METHODS[settings.method],
                            extra_options=dict(EXTRA_OPTIONS), calibration_cache_path=str(ranges_file))
        model = onnx.load(str(out))
    if only is None:
        float_layers = set(exclude)
    else:
        only = set(only)
        float_layers = {n.name for n in model.graph.node if n.op_type in OP_TYPES and n.name not in only}
    read_float_inputs(model, float_layers)
    keep_outputs_float(model)
    own_qdq_parameters(model)
    drop_unused_initializers(model)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


def read_float_inputs(model: onnx.ModelProto, names: set[str]) -> None:
    """Layers left in float read the float tensors, not a Q -> DQ copy of them.

    With ``DedicatedQDQPair``, onnxruntime gives every reader of a tensor that
    some INT8 layer reads its own Q -> DQ pair, the layers it was told to
    leave alone included: a layer "kept in FP32" still saw INT8-rounded
    inputs. Each such input is pointed back at the float tensor, and the pair,
    read by nothing now, is removed.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name not in names:
            continue
        for i, name in enumerate(node.input):
            if pair := _qdq_pair(producer, name):
                node.input[i] = pair[0].input[0]
    for op_type in ("DequantizeLinear", "QuantizeLinear"):      # DQs first: then their Qs are unread
        read = _read_tensors(graph)
        for node in [n for n in graph.node if n.op_type == op_type and n.output[0] not in read]:
            graph.node.remove(node)


def _qdq_pair(producer: dict[str, onnx.NodeProto], tensor: str) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """The ``(Q, DQ)`` nodes that make ``tensor`` as a quantized copy of ``Q``'s input, or None."""
    dq = producer.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producer.get(dq.input[0])
    return (q, dq) if q is not None and q.op_type == "QuantizeLinear" else None


def _read_tensors(graph: onnx.GraphProto) -> set[str]:
    """Names of the tensors something reads: a node's input or a graph output."""
    return {name for node in graph.node for name in node.input} | {o.name for o in graph.output}


def keep_outputs_float(model: onnx.ModelProto) -> None:
    """Remove the Q -> DQ pair in front of each graph output: the model's outputs stay full precision."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    for output in graph.output:
        pair = _qdq_pair(producer, output.name)
        if pair is None:
            continue
        q, dq = pair
        if sum(dq.input[0] in n.input for n in graph.node) != 1:
            continue                     # the quantized tensor feeds other nodes too: leave it
        source = q.input[0]
        for node in graph.node:          # whatever made or read the float tensor now uses the output's name
            node.output[:] = [output.name if t == source else t for t in node.output]
            node.input[:] = [output.name if t == source else t for t in node.input]
        graph.node.remove(q)
        graph.node.remove(dq)


def own_qdq_parameters(model: onnx.ModelProto) -> None:
    """Give each activation QuantizeLinear (and the DQs after it) scale and zero-point initializers of its own.

    Why: with ``DedicatedQDQPair`` a tensor read by two layers gets two
    identical Q -> DQ pairs, as TensorRT wants. onnxruntime's common
    subexpression elimination merges identical Q nodes back into one Q with
    two DQs; its QDQS8ToU8 transform (x86 runs uint8 activations) converts a
    Q only when it has a single consumer, and an int8 QLinearConv is not
    allowed on x86, so every layer after a fork ran as a float Conv between a
    DQ and a Q: the INT8 model was slower than FP32 (0.8x, measured). With
    their own initializers the pairs are no longer identical and stay apart.
    """
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for index, q in enumerate(n for n in list(graph.node) if n.op_type == "QuantizeLinear"):
        if q.input[0] in initializers or len(q.input) < 3:
            continue
        names = []
        for position, suffix in ((1, "scale"), (2, "zero_point")):
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[q.input[position]])
            copy.name = f"{q.input[position]}/q{index}"
            graph.initializer.append(copy)
            names.append(copy.name)
        for dq in consumers.get(q.output[0], []):
            if dq.op_type == "DequantizeLinear" and list(dq.input[1:3]) == list(q.input[1:3]):
                dq.input[1], dq.input[2] = names
        q.input[1], q.input[2] = names


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = _read_tensors(model.graph)
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


# --- what the Q/DQ model holds


def layers(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute on quantized inputs (Conv, Add, Resize, Sigmoid...), in graph order."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.op_type in _FOLLOWERS:
            continue
        if any(t in producer and producer[t].op_type == "DequantizeLinear" for t in node.input):
            names.append(node.name)
    return names


def layer_label(model: onnx.ModelProto, name: str) -> str:
    """``name (Conv keypoint_head.1)``: the op and, for a layer with weights, the module they came from."""
    node = next(n for n in model.graph.node if n.name == name)
    weights = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    module = ""
    if len(node.input) > 1:
        source = node.input[1]
        if source in producer and producer[source].op_type == "DequantizeLinear":
            source = producer[source].input[0]
        if source in weights or source.endswith("_quantized"):
            module = source.removesuffix("_quantized").removesuffix(".weight")
    return f"{name} ({node.op_type}{' ' + module if module else ''})"


def summary(model: onnx.ModelProto, kept_fp32: Iterable[str] = ()) -> str:
    """``Conv 30, Add 10, ...``: the layers that compute on INT8 inputs, less those asked to stay FP32.

    (A layer kept in FP32 may still read a DQ output, of a neighbour's Q/DQ; it computes in float.)
    """
    names = set(layers(model)) - set(kept_fp32)
    kinds = Counter(n.op_type for n in model.graph.node if n.name in names)
    return ", ".join(f"{op} {count}" for op, count in kinds.most_common()) or "none"


def check_qdq(model: onnx.ModelProto) -> list[str]:
    """What in ``model`` is not symmetric, zero-point-0 INT8 Q/DQ with per-channel Conv weights on axis 0.

    An empty list: the model is in the form TensorRT takes for explicit
    quantization. Run on every model ``rtpose calib`` writes.
    """
    problems = []
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        problems.append(f"opset {opset} is below {MIN_OPSET}")
    if model.ir_version > MAX_IR_VERSION:
        problems.append(f"IR version {model.ir_version} is above {MAX_IR_VERSION}")
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        problems.append("no QuantizeLinear/DequantizeLinear nodes")
    for node in qdq:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.name}: {node.domain} domain, not the standard one")
        if len(node.input) < 3 or node.input[2] not in initializers:
            problems.append(f"{node.name}: no constant zero point")
            continue
        zero_point, scale = initializers[node.input[2]], initializers.get(node.input[1])
        if zero_point.dtype != np.int8:
            problems.append(f"{node.name}: zero point is {zero_point.dtype}, not int8")
        elif np.any(zero_point != 0):
            problems.append(f"{node.name}: zero point is not 0 (asymmetric)")
        if scale is None or scale.dtype != np.float32 or np.any(scale <= 0):
            problems.append(f"{node.name}: scale is not a positive float32 constant")
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            if initializers[node.input[0]].dtype != np.int8:
                problems.append(f"{node.name}: dequantizes a {initializers[node.input[0]].dtype} constant")
    producer = {o: n for n in graph.node for o in n.output}
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue                                  # a layer kept in float
        weight = initializers.get(dq.input[0])
        scale = initializers.get(dq.input[1])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if weight is None:
            problems.append(f"{conv.name}: weight is not an INT8 constant")
        elif scale is None or scale.size != weight.shape[0] or axis != 0:
            problems.append(f"{conv.name}: weight scale is not per output channel (axis 0)")
    for output in graph.output:
        if output.name in producer and producer[output.name].op_type == "DequantizeLinear":
            problems.append(f"output '{output.name}' is quantized (outputs stay float)")
    return problems
