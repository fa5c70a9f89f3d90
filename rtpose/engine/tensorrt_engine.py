"""TensorRT backend: an rtpose engine file run through TensorRT's named-tensor API.

Written against what TensorRT 10.x and 11.x share: ``Runtime.deserialize_cuda_engine``,
IO tensors found by name (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``get_tensor_dtype``, ``get_tensor_profile_shape``), and
``IExecutionContext.set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3`` on a CUDA stream. Memory comes from cuda-python's runtime
bindings (``cudaMalloc``, ``cudaMallocHost``, ``cudaMemcpyAsync``), which
return ``(error, value...)`` tuples; pycuda is not needed.

Buffers are allocated once, for the largest batch of the engine's optimization
profile: device memory for every IO tensor, and pinned host memory beside
each, so the copies are truly asynchronous. ``infer`` copies the batch into
pinned memory, uploads it, runs the engine, downloads the outputs and waits
for the stream once. A model whose ``input_format`` is ``uint8_nhwc_bgr``
(what ``rtpose export --format tensorrt`` builds by default) is uploaded as
letterboxed uint8 pixels, a quarter of the float bytes, and normalised by the
first layers of the engine, on the GPU.

Status: TensorRT itself has not run with this code (no TensorRT where it was
written). The engine is tested against the fakes in ``tests/fakes``
everywhere, and on a machine with a GPU and cuda-python ``tests/test_gpu.py``
runs it with TensorRT alone faked: the buffers, copies and stream above ran on
an H100 through the real cuda-python runtime.
"""

from __future__ import annotations

import ctypes
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorrt as trt

try:
    from cuda.bindings import runtime as cudart       # cuda-python 12.6 and later
except ImportError:
    from cuda import cudart                            # older cuda-python

from rtpose.engine import EngineError
from rtpose.engine.tensorrt_file import read_engine_file
from rtpose.model_meta import FLOAT32_NCHW_RGB, UINT8_NHWC_BGR

_REBUILD = "rebuild it on this machine with: rtpose export <checkpoint or .onnx> --format tensorrt"


class TensorRTMessages(trt.ILogger):
    """TensorRT's log: errors are kept so that a failure is reported in one line; warnings go to stderr.

    One instance serves the runtime and the builder (TensorRT 8 documented the
    logger as a process-wide singleton; sharing one is safe with every version).
    """

    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.errors: deque[str] = deque(maxlen=20)

    def log(self, severity, msg) -> None:
        if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
            self.errors.append(str(msg))
        elif severity == trt.ILogger.WARNING:
            print(f"TensorRT: {msg}", file=sys.stderr)

    def clear(self) -> None:
        self.errors.clear()

    def last_error(self) -> str:
        """``": <last error>"`` if TensorRT logged one, else ``""``: for the end of an error message."""
        return f": {self.errors[-1]}" if self.errors else ""


MESSAGES = TensorRTMessages()


def cuda_check(result, what: str):
    """The value(s) of a cuda-python call, which returns ``(error, value...)``; an error raises EngineError."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorString(err)
        name = name.decode() if isinstance(name, bytes) else str(name)
        raise EngineError(f"CUDA {what} failed: {name}")
    return values[0] if len(values) == 1 else (tuple(values) or None)


@dataclass
class _Buffer:
    """One IO tensor's device memory and the pinned host memory it is copied through."""

    name: str
    dtype: np.dtype
    nbytes: int               # for the profile's largest batch
    device: int = 0
    host_ptr: int = 0
    host: np.ndarray | None = None     # uint8 view of the pinned memory

    def allocate(self) -> None:
        self.device = cuda_check(cudart.cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes}) for '{self.name}'")
        self.host_ptr = cuda_check(cudart.cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes})")
        self.host = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.host_ptr))

    def free(self) -> None:
        self.host = None
        if self.host_ptr:
            cudart.cudaFreeHost(self.host_ptr)
            self.host_ptr = 0
        if self.device:
            cudart.cudaFree(self.device)
            self.device = 0


def _numpy_dtype(engine, name: str) -> np.dtype:
    trt_type = engine.get_tensor_dtype(name)
    try:
        return np.dtype(trt.nptype(trt_type))
    except TypeError:
        raise EngineError(f"tensor '{name}' is {trt_type}, which numpy has no type for") from None


class TensorRTEngine:
    """The Engine interface over an rtpose ``.engine`` file (header + TensorRT plan)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta, plan = read_engine_file(self.path)
        self.providers = [f"TensorRT {trt.__version__}"]
        self.threads = "none (GPU)"
        self.context = self.engine = self.runtime = None
        self._stream = None
        self._buffers: dict[str, _Buffer] = {}
        try:
            self._open(plan)
        except BaseException:
            self.close()
            raise

    def _open(self, plan: bytes) -> None:
        meta, path = self.meta, self.path
        MESSAGES.clear()
        self.runtime = trt.Runtime(MESSAGES)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            built = meta.versions.get("tensorrt", "an unrecorded version")
            raise EngineError(f"{path}: TensorRT {trt.__version__} cannot load this engine (built with TensorRT "
                              f"{built}; a plan runs only with the TensorRT version and GPU it was built for; "
                              f"{_REBUILD}){MESSAGES.last_error()}")
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [meta.input_name] or sorted(outputs) != sorted(meta.output_names):
            raise EngineError(f"{path}: the engine's tensors (inputs {inputs}, outputs {outputs}) are not those "
                              f"its metadata names ({meta.input_name}; {', '.join(meta.output_names)})")
        h, w = meta.input_height, meta.input_width
        layouts = {FLOAT32_NCHW_RGB: (np.float32, (3, h, w)), UINT8_NHWC_BGR: (np.uint8, (h, w, 3))}
        if meta.input_format not in layouts:
            raise EngineError(f"{path}: unknown input format '{meta.input_format}'")
        dtype, self.sample_shape = np.dtype(layouts[meta.input_format][0]), layouts[meta.input_format][1]
        if _numpy_dtype(engine, meta.input_name) != dtype:
            raise EngineError(f"{path}: input '{meta.input_name}' is {engine.get_tensor_dtype(meta.input_name)} "
                              f"but its metadata says '{meta.input_format}'")
        low, _, high = (tuple(s) for s in engine.get_tensor_profile_shape(meta.input_name, 0))
        if high[1:] != self.sample_shape:
            raise EngineError(f"{path}: the engine's input shape {list(high)} does not fit "
                              f"{meta.input_width}x{meta.input_height} {meta.input_format}")
        self.min_batch, self.max_batch = int(low[0]), int(high[0])

        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"{path}: TensorRT could not make an execution context{MESSAGES.last_error()}")
        self._stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        # Sized once for the profile's largest batch: infer then only sets shapes, copies and runs.
        if not self.context.set_input_shape(meta.input_name, high):
            raise EngineError(f"{path}: TensorRT refused input shape {list(high)}{MESSAGES.last_error()}")
        for name in (meta.input_name, *meta.output_names):
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f"{path}: output '{name}' has no fixed shape for input {list(high)}: {list(shape)}")
            dtype = _numpy_dtype(engine, name)
            buffer = _Buffer(name, dtype, int(np.prod(shape)) * dtype.itemsize)
            self._buffers[name] = buffer
            buffer.allocate()
            if not self.context.set_tensor_address(name, buffer.device):
                raise EngineError(f"{path}: TensorRT refused the address of '{name}'{MESSAGES.last_error()}")

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.context is None:
            raise EngineError(f"{self.path}: the engine is closed")
        meta = self.meta
        source = self._buffers[meta.input_name]
        batch = np.asarray(batch)
        if batch.dtype != source.dtype or batch.ndim != 4 or batch.shape[1:] != self.sample_shape:
            raise EngineError(f"{self.path} takes {source.dtype} [N, {', '.join(map(str, self.sample_shape))}] "
                              f"({meta.input_format}); got {batch.dtype} {list(batch.shape)}")
        n = batch.shape[0]
        if not self.min_batch <= n <= self.max_batch:
            raise EngineError(f"{self.path}: a batch of {n} is outside the engine's range {self.min_batch}.."
                              f"{self.max_batch}, fixed when it was built (rtpose export --format tensorrt "
                              f"--min-batch M --max-batch N)")
        if not self.context.set_input_shape(meta.input_name, batch.shape):
            raise EngineError(f"{self.path}: TensorRT refused input shape {list(batch.shape)}{MESSAGES.last_error()}")
        flat = np.ascontiguousarray(batch).reshape(-1).view(np.uint8)
        source.host[:flat.size] = flat                     # into pinned memory: the upload can be asynchronous
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(cudart.cudaMemcpyAsync(source.device, source.host_ptr, flat.size, h2d, self._stream),
                   "upload (cudaMemcpyAsync)")
        MESSAGES.clear()
        if not self.context.execute_async_v3(int(self._stream)):
            raise EngineError(f"{self.path}: TensorRT could not run the engine{MESSAGES.last_error()}")
        shapes = {}
        for name in meta.output_names:
            out = self._buffers[name]
            shapes[name] = tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(shapes[name])) * out.dtype.itemsize
            cuda_check(cudart.cudaMemcpyAsync(out.host_ptr, out.device, nbytes, d2h, self._stream),
                       "download (cudaMemcpyAsync)")
        cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        results = []
        for name in meta.output_names:
            out, shape = self._buffers[name], shapes[name]
            array = out.host[:int(np.prod(shape)) * out.dtype.itemsize].view(out.dtype).reshape(shape)
            # A copy either way: the pinned buffer is overwritten by the next call.
            results.append(array.astype(np.float32) if array.dtype == np.float16 else array.copy())
        return tuple(results)

    def close(self) -> None:
        """Frees the buffers and the stream; safe to call twice."""
        if self._stream is not None:
            cudart.cudaStreamSynchronize(self._stream)
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers = {}
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        # Context before engine before runtime: each was made from the next.
        self.context = None
        self.engine = None
        self.runtime = None
