"""The fake TensorRT's view of device memory, backed by a real GPU through cuda-python.

With ``fakes.install(monkeypatch, real_cuda=True)`` rtpose's TensorRT engine
allocates, copies and synchronises through the real ``cuda.bindings.runtime``
and only TensorRT itself is faked: its ``execute_async_v3`` reads the input
from real device memory, computes the plan's ONNX with onnxruntime and writes
the outputs back to real device memory. This module gives the fake the five
names it uses of ``fakes.cudart``, over the real runtime:

- ``check_device_range``: the pointer must lie in a live ``cudaMalloc``
  allocation with room for the access (the driver's ``cuMemGetAddressRange``);
- ``device_read`` / ``device_write``: synchronous ``cudaMemcpy``;
- ``enqueue(stream, work)``: waits for the work already on the stream (the
  engine's upload), then runs ``work`` at once, so the engine's download that
  follows on the stream sees its outputs;
- ``FakeCudaError``: what the three raise.
"""

from __future__ import annotations

import numpy as np

try:
    from cuda.bindings import driver, runtime
except ImportError:                                  # older cuda-python
    from cuda import cuda as driver, cudart as runtime


class FakeCudaError(RuntimeError):
    def __init__(self, code, message: str) -> None:
        super().__init__(message)
        self.code = code


def _check(result, what: str):
    err, *values = result
    if int(err) != 0:
        raise FakeCudaError(err, f"{what}: {err!r}")
    return values[0] if len(values) == 1 else values


def check_device_range(ptr: int, nbytes: int) -> None:
    base, size = _check(driver.cuMemGetAddressRange(int(ptr)), f"0x{int(ptr):x} is not device memory")
    if int(ptr) + nbytes > int(base) + size:
        raise FakeCudaError(runtime.cudaError_t.cudaErrorIllegalAddress,
                            f"device access of {nbytes} bytes at +{int(ptr) - int(base)} overruns an allocation "
                            f"of {size}")


def device_read(ptr: int, nbytes: int) -> bytes:
    check_device_range(ptr, nbytes)
    host = np.empty(nbytes, np.uint8)
    _check(runtime.cudaMemcpy(host.ctypes.data, int(ptr), nbytes, runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost),
           "cudaMemcpy to the host")
    return host.tobytes()


def device_write(ptr: int, data: bytes) -> None:
    check_device_range(ptr, len(data))
    host = np.frombuffer(data, np.uint8)
    _check(runtime.cudaMemcpy(int(ptr), host.ctypes.data, len(data), runtime.cudaMemcpyKind.cudaMemcpyHostToDevice),
           "cudaMemcpy to the device")


def enqueue(stream: int, work) -> None:
    _check(runtime.cudaStreamSynchronize(int(stream)), "cudaStreamSynchronize")
    work()


def free_device_bytes() -> int:
    """Free device memory now (``cudaMemGetInfo``), to check that an engine gives back what it took."""
    free, _total = _check(runtime.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free)
