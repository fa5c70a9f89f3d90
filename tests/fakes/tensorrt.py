"""A fake of the ``tensorrt`` Python API: the part common to TensorRT 10.x and 11.x that rtpose uses.

Faithful in what rtpose's code can get wrong: names, shapes (``-1`` for a
dynamic dimension until the input shape is set), data types, optimization
profiles, IO modes, return values (``bool`` from ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3``; ``None`` from a failed
``deserialize_cuda_engine`` or ``build_serialized_network``), errors reported
through the logger rather than raised, and the rule that ``execute_async_v3``
refuses to run without every input shape and every tensor address set. Like
TensorRT 11 it has no FP16/INT8 builder flags and no calibrator: precision
comes from the ONNX graph.

The "plan" is a small JSON header and the ONNX bytes; the engine computes
with onnxruntime, reading its input from and writing its outputs to the fake
cudart's device memory, on the stream it is given (so the results appear at
``cudaStreamSynchronize``). Stricter than TensorRT: a tensor address whose
allocation is too small for the tensor's current shape is refused (TensorRT
cannot tell, and would write past it).

Builder side, as TensorRT documents it: the timing cache
(``IBuilderConfig.create_timing_cache(bytes)``, empty bytes for a new one,
``set_timing_cache(cache, ignore_mismatch) -> bool``, ``get_timing_cache()``,
``ITimingCache.serialize()/combine()/reset()``). What TensorRT does with a
damaged cache or another version's is not documented exactly; the fake refuses
it at ``create_timing_cache`` (``None``, error logged), and rtpose's builder
handles that and a ``False`` from ``set_timing_cache`` alike. The fake times
one "tactic" per ONNX node and records in the plan
how many came from the cache, so a test can see a second build reuse it. The
ONNX parser refuses what TensorRT's refuses in explicit quantization: a
QuantizeLinear/DequantizeLinear whose zero point is not 0 ("TensorRT only
supports symmetric quantization"), whose quantized type is uint8 or another
type TensorRT has no Q/DQ for (FP8 and INT4, which it has, rtpose does not
write: the fake takes INT8 only), and a
DequantizeLinear of an INT32 constant such as a quantized bias ("only
activation types allowed as input to this layer"); messages paraphrase
TensorRT's. Without a GPU (``_gpu_count = 0``) the builder cannot be
created: TensorRT logs a CUDA initialization failure and the Python binding
raises ``TypeError`` ("factory function returned nullptr").
"""

from __future__ import annotations

import enum
import json
import struct

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from . import cudart

__version__ = "10.99.0+fake"

_PLAN_MAGIC = b"FAKEPLAN"
_CACHE_MAGIC = b"FAKETCACHE"
_gpu_count = 1                  # tests set 0 (monkeypatch) for a machine without an NVIDIA GPU


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        pass

    def log(self, severity, msg) -> None:
        raise NotImplementedError


class Logger(ILogger):
    def __init__(self, min_severity=ILogger.Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity
        self.messages: list[tuple[ILogger.Severity, str]] = []

    def log(self, severity, msg) -> None:
        if severity <= self.min_severity:
            self.messages.append((severity, msg))


def _error(logger: ILogger, msg: str) -> None:
    logger.log(ILogger.ERROR, msg)


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9

    @property
    def itemsize(self) -> float:
        return {DataType.FLOAT: 4, DataType.HALF: 2, DataType.INT8: 1, DataType.INT32: 4, DataType.BOOL: 1,
                DataType.UINT8: 1, DataType.FP8: 1, DataType.BF16: 2, DataType.INT64: 8, DataType.INT4: 0.5}[self]


_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
          DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}
_FROM_ONNX = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF,
              onnx.TensorProto.INT8: DataType.INT8, onnx.TensorProto.INT32: DataType.INT32,
              onnx.TensorProto.BOOL: DataType.BOOL, onnx.TensorProto.UINT8: DataType.UINT8,
              onnx.TensorProto.INT64: DataType.INT64, onnx.TensorProto.BFLOAT16: DataType.BF16}


def nptype(trt_type: DataType):
    if trt_type not in _NUMPY:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return _NUMPY[trt_type]


def volume(shape) -> int:
    return int(np.prod(list(shape), dtype=np.int64))


class Dims(tuple):
    """``tensorrt.Dims``: a sequence of ints."""

    def __new__(cls, values=()):
        return super().__new__(cls, (int(v) for v in values))


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


class BuilderFlag(enum.IntEnum):
    """TensorRT 11 keeps no precision flags (FP16, INT8, ...): using one fails here as it would there."""

    DEBUG = 0
    REFIT = 1


class ErrorCode(enum.Enum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


class ParserError:
    def __init__(self, code: ErrorCode, desc: str, node: int = -1) -> None:
        self._code, self._desc, self._node = code, desc, node

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def __str__(self) -> str:
        return f"In node {self._node} with name: : ({self._code.name}: {self._desc})"


# --- network, parser, builder


class ITensor:
    def __init__(self, name: str, shape, dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, Dims(shape), dtype


def _value_info(value: onnx.ValueInfoProto) -> ITensor:
    tensor_type = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    return ITensor(value.name, dims, _FROM_ONNX.get(tensor_type.elem_type, DataType.FLOAT))


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.onnx: bytes | None = None
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []

    def get_flag(self, flag: NetworkDefinitionCreationFlag) -> bool:
        return bool(self.flags & (1 << int(flag)))

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network, self.logger = network, logger
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors = []

    def parse(self, model, path: str | None = None) -> bool:
        data = bytes(model)
        try:
            proto = onnx.load_from_string(data)
            onnx.checker.check_model(proto)
        except Exception as exc:  # noqa: BLE001 - the parser reports, it does not raise
            self._errors.append(ParserError(ErrorCode.MODEL_DESERIALIZE_FAILED,
                                            f"Failed to parse ONNX model: {type(exc).__name__}"))
            return False
        problem = _explicit_quantization_problem(proto)
        if problem is not None:
            self._errors.append(ParserError(ErrorCode.INVALID_NODE, problem[1], problem[0]))
            return False
        initializers = {i.name for i in proto.graph.initializer}
        self.network._inputs = [_value_info(v) for v in proto.graph.input if v.name not in initializers]
        self.network._outputs = [_value_info(v) for v in proto.graph.output]
        self.network.onnx = data
        return True

    def parse_from_file(self, path: str) -> bool:
        with open(path, "rb") as f:
            return self.parse(f.read(), path)


def _explicit_quantization_problem(proto: onnx.ModelProto) -> tuple[int, str] | None:
    """(node index, message) for the first Q/DQ node TensorRT would refuse, or None."""
    initializers = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for index, node in enumerate(proto.graph.node):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers \
                and initializers[node.input[0]].dtype == np.int32:
            return index, f"{node.name}: only activation types allowed as input to this layer."
        zero_point = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is not None and zero_point.dtype != np.int8:
            return index, f"{node.name}: quantized type {zero_point.dtype} is not supported for Q/DQ (INT8 is)"
        if zero_point is not None and np.any(zero_point != 0):
            return index, (f"{node.name}: TensorRT only supports symmetric quantization. The zero point for the "
                           f"QuantizeLinear/DequantizeLinear operator must be all zeros.")
    return None


def _tactic_keys(onnx_bytes: bytes, shapes: dict) -> list[str]:
    """What the fake 'times': one entry per node, keyed by op, attributes and the profile's shapes."""
    proto = onnx.load_from_string(onnx_bytes)
    profile = json.dumps(shapes, sort_keys=True)
    return sorted({f"{n.op_type}|{n.name}|{[str(a) for a in n.attribute]}|{profile}" for n in proto.graph.node})


class ITimingCache:
    def __init__(self, entries: set[str] | None = None, version: str = __version__) -> None:
        self.entries = set(entries or ())
        self.version = version

    def serialize(self) -> "IHostMemory":
        body = json.dumps({"version": self.version, "entries": sorted(self.entries)}).encode()
        return IHostMemory(_CACHE_MAGIC + body)

    def combine(self, input_cache: "ITimingCache", ignore_mismatch: bool) -> bool:
        if input_cache.version != self.version:
            return False
        self.entries |= input_cache.entries
        return True

    def reset(self) -> bool:
        self.entries.clear()
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min, opt, max) -> None:
        self.shapes[input] = (Dims(min), Dims(opt), Dims(max))

    def get_shape(self, input: str) -> list[Dims]:
        return list(self.shapes.get(input, ()))


class IBuilderConfig:
    def __init__(self) -> None:
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self.flags: set[BuilderFlag] = set()
        self.timing_cache: ITimingCache | None = None
        self.logger: ILogger | None = None         # set by the builder that made this config

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.pool_limits[pool] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self.pool_limits.get(pool, 0)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(flag)

    def create_timing_cache(self, serialized_timing_cache) -> ITimingCache | None:
        data = bytes(serialized_timing_cache)
        if not data:
            return ITimingCache()
        try:
            if not data.startswith(_CACHE_MAGIC):
                raise ValueError("no magic")
            record = json.loads(data[len(_CACHE_MAGIC):])
        except ValueError:
            _error(self.logger, "Error Code 1: Serialization (timing cache is corrupted or not a timing cache)")
            return None
        if record["version"] != __version__:
            _error(self.logger, f"Error Code 1: Serialization (timing cache was created by TensorRT "
                                f"{record['version']}, this is {__version__})")
            return None
        return ITimingCache(set(record["entries"]), record["version"])

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if not isinstance(cache, ITimingCache):
            raise TypeError("set_timing_cache(): incompatible function arguments")
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self.timing_cache


class IHostMemory(bytes):
    """What ``build_serialized_network`` returns: bytes-like (buffer protocol), with ``nbytes``."""

    @property
    def nbytes(self) -> int:
        return len(self)


class Builder:
    def __init__(self, logger: ILogger) -> None:
        if _gpu_count < 1:
            logger.log(ILogger.ERROR, "CUDA initialization failure with error: 100. Please check your CUDA "
                                      "installation: http://docs.nvidia.com/cuda/cuda-installation-guide-linux/index.html")
            raise TypeError("pybind11::init(): factory function returned nullptr")
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        config = IBuilderConfig()
        config.logger = self.logger
        return config

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        if network.onnx is None:
            _error(self.logger, "Network must have at least one output.")
            return None
        profile = config.profiles[0] if config.profiles else None
        shapes = {}
        for tensor in network._inputs:
            if all(d >= 0 for d in tensor.shape) and (profile is None or tensor.name not in profile.shapes):
                shapes[tensor.name] = [list(tensor.shape)] * 3
                continue
            if profile is None or tensor.name not in profile.shapes:
                _error(self.logger, f"Error Code 4: API Usage Error (Network has dynamic or shape inputs, but no "
                                    f"optimization profile has been defined for '{tensor.name}'.)")
                return None
            low, opt, high = profile.shapes[tensor.name]
            ok = len(low) == len(opt) == len(high) == len(tensor.shape) and all(
                (d < 0 and 1 <= a <= b <= c) or (d >= 0 and a == b == c == d)
                for d, a, b, c in zip(tensor.shape, low, opt, high))
            if not ok:
                _error(self.logger, f"Error Code 4: API Usage Error (optimization profile for '{tensor.name}' "
                                    f"{list(low)} {list(opt)} {list(high)} does not fit {list(tensor.shape)})")
                return None
            shapes[tensor.name] = [list(low), list(opt), list(high)]
        timing = None
        if config.timing_cache is not None:
            keys = _tactic_keys(network.onnx, shapes)
            hits = sum(k in config.timing_cache.entries for k in keys)
            config.timing_cache.entries.update(keys)
            timing = {"hits": hits, "misses": len(keys) - hits}
        header = json.dumps({
            "version": __version__,
            "strongly_typed": network.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED),
            "workspace": config.get_memory_pool_limit(MemoryPoolType.WORKSPACE),
            "profile": shapes,
            "timing_cache": timing,
        }).encode()
        return IHostMemory(_PLAN_MAGIC + struct.pack("<I", len(header)) + header + network.onnx)


def read_plan_header(plan: bytes) -> tuple[dict, int]:
    """What the fake builder recorded in a plan, and where the ONNX bytes start."""
    (length,) = struct.unpack_from("<I", plan, len(_PLAN_MAGIC))
    start = len(_PLAN_MAGIC) + 4
    return json.loads(plan[start:start + length]), start + length


# --- runtime


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine) -> "ICudaEngine | None":
        plan = bytes(serialized_engine)
        if not plan.startswith(_PLAN_MAGIC):
            _error(self.logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                                "assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
            return None
        header, start = read_plan_header(plan)
        if header["version"] != __version__:
            _error(self.logger, f"IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan "
                                f"file is not compatible with this version of TensorRT, expecting library version "
                                f"{__version__} got {header['version']}, please rebuild.)")
            return None
        return ICudaEngine(header, plan[start:], self.logger)


class ICudaEngine:
    def __init__(self, header: dict, onnx_bytes: bytes, logger: ILogger) -> None:
        self.logger = logger
        proto = onnx.load_from_string(onnx_bytes)
        initializers = {i.name for i in proto.graph.initializer}
        self._inputs = [_value_info(v) for v in proto.graph.input if v.name not in initializers]
        self._outputs = [_value_info(v) for v in proto.graph.output]
        self._symbols = {v.name: [d.dim_param if d.HasField("dim_param") else None
                                  for d in v.type.tensor_type.shape.dim]
                         for v in [*proto.graph.input, *proto.graph.output]}
        self._tensors = {t.name: t for t in [*self._inputs, *self._outputs]}
        self._profile = {name: [Dims(s) for s in shapes] for name, shapes in header["profile"].items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.contexts_made = 0

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str | None:
        names = list(self._tensors)
        return names[index] if 0 <= index < len(names) else None

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        if name in {t.name for t in self._inputs}:
            return TensorIOMode.INPUT
        if name in {t.name for t in self._outputs}:
            return TensorIOMode.OUTPUT
        return TensorIOMode.NONE

    def get_tensor_shape(self, name: str) -> Dims:
        return self._tensors[name].shape if name in self._tensors else Dims()

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._tensors[name].dtype

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if profile_index != 0 or name not in self._profile:
            raise RuntimeError(f"no profile shape for '{name}' in profile {profile_index} (not an input?)")
        return list(self._profile[name])

    def create_execution_context(self) -> "IExecutionContext":
        self.contexts_made += 1
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self._shapes: dict[str, Dims] = {}
        self._addresses: dict[str, int] = {}
        self._output_shapes: dict[tuple, dict[str, Dims]] = {}
        self.runs = 0

    def _fail(self, msg: str) -> bool:
        _error(self.engine.logger, msg)
        return False

    def set_input_shape(self, name: str, shape) -> bool:
        engine = self.engine
        if engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            return self._fail(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Given tensor "
                              f"name: {name} is not an input tensor.)")
        shape = Dims(shape)
        low, _, high = engine._profile[name]
        declared = engine.get_tensor_shape(name)
        fits = len(shape) == len(declared) and all(
            (d >= 0 and s == d) or (d < 0 and lo <= s <= hi) for s, d, lo, hi in zip(shape, declared, low, high))
        if not fits:
            return self._fail(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check "
                              f"failed, condition: {list(shape)} within profile {list(low)}..{list(high)} of "
                              f"{name} {list(declared)})")
        self._shapes[name] = shape
        return True

    def _all_inputs_set(self) -> bool:
        return all(t.name in self._shapes for t in self.engine._inputs)

    def _resolved_outputs(self) -> dict[str, Dims]:
        key = tuple(self._shapes[t.name] for t in self.engine._inputs)
        if key not in self._output_shapes:
            symbols = {}
            for t in self.engine._inputs:
                for sym, value in zip(self.engine._symbols[t.name], self._shapes[t.name]):
                    if sym:
                        symbols[sym] = value
            shapes = {}
            for t in self.engine._outputs:
                dims = [symbols.get(sym, -1) if d < 0 else d for d, sym in zip(t.shape, self.engine._symbols[t.name])]
                shapes[t.name] = dims
            if any(d < 0 for dims in shapes.values() for d in dims):   # a symbol no input names: run once to learn it
                feeds = {t.name: np.zeros(self._shapes[t.name], nptype(t.dtype)) for t in self.engine._inputs}
                results = self.engine.session.run([t.name for t in self.engine._outputs], feeds)
                shapes = {t.name: list(r.shape) for t, r in zip(self.engine._outputs, results)}
            self._output_shapes[key] = {name: Dims(dims) for name, dims in shapes.items()}
        return self._output_shapes[key]

    def get_tensor_shape(self, name: str) -> Dims:
        mode = self.engine.get_tensor_mode(name)
        if mode == TensorIOMode.INPUT:
            return self._shapes.get(name, self.engine.get_tensor_shape(name))
        if mode == TensorIOMode.OUTPUT:
            if not self._all_inputs_set():
                return self.engine.get_tensor_shape(name)
            return self._resolved_outputs()[name]
        return Dims()

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
            return self._fail(f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (Given "
                              f"tensor name: {name} is not an input or output tensor.)")
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        if not isinstance(stream_handle, int):
            raise TypeError("execute_async_v3(): incompatible function arguments: stream_handle must be an int")
        engine = self.engine
        if not self._all_inputs_set():
            missing = [t.name for t in engine._inputs if t.name not in self._shapes]
            return self._fail(f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check "
                              f"failed, condition: all input dimensions specified; missing {missing})")
        for name in engine._tensors:
            if not self._addresses.get(name):
                return self._fail(f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check "
                                  f"failed, condition: address of tensor {name} is set)")
        sizes = {name: volume(self.get_tensor_shape(name)) * engine._tensors[name].dtype.itemsize
                 for name in engine._tensors}
        for name, nbytes in sizes.items():
            try:
                cudart.check_device_range(self._addresses[name], int(nbytes))
            except cudart.FakeCudaError as exc:
                return self._fail(f"(fake) tensor {name} needs {int(nbytes)} bytes at its address: {exc}")
        shapes = {name: self.get_tensor_shape(name) for name in engine._tensors}
        addresses = dict(self._addresses)
        self.runs += 1

        def run() -> None:
            feeds = {}
            for t in engine._inputs:
                raw = cudart.device_read(addresses[t.name], int(sizes[t.name]))
                feeds[t.name] = np.frombuffer(raw, dtype=nptype(t.dtype)).reshape(shapes[t.name])
            results = engine.session.run([t.name for t in engine._outputs], feeds)
            for t, result in zip(engine._outputs, results):
                result = np.ascontiguousarray(result, dtype=nptype(t.dtype))
                assert tuple(result.shape) == tuple(shapes[t.name]), (t.name, result.shape, shapes[t.name])
                cudart.device_write(addresses[t.name], result.tobytes())

        try:
            cudart.enqueue(stream_handle, run)
        except cudart.FakeCudaError as exc:
            return self._fail(f"IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime ({exc})")
        return True
