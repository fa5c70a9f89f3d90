"""A fake of cuda-python's runtime bindings (``cuda.bindings.runtime``, formerly ``cuda.cudart``).

Faithful where rtpose depends on it:

- every call returns a tuple ``(cudaError_t, value...)``, ``(cudaError_t,)`` when there is no value;
- device memory is host memory behind integer "device pointers" far above any
  host address (1 << 60 and up), 256-byte aligned, with gaps between
  allocations; every access is bounds-checked against one live allocation,
  so an overrun, a freed or a made-up pointer is an error, not silent corruption;
- ``cudaMallocHost`` returns real (pinned, here: ordinary) host memory, and
  ``cudaMemcpyAsync`` insists that its host side lies in such memory;
- work on a stream (copies, and engines enqueued by the fake TensorRT) runs
  only at ``cudaStreamSynchronize``, so host code that reads outputs before
  synchronising reads stale bytes, as it would on a GPU.

Stricter than CUDA on purpose: pageable host memory in an async copy is an
error here (CUDA would silently make the copy synchronous).
"""

from __future__ import annotations

import ctypes
import enum
import itertools
from collections import deque

_DEVICE_BASE = 1 << 60          # no user-space host address is this high
_ALIGN = 256


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevicePointer = 17
    cudaErrorInvalidMemcpyDirection = 21
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalAddress = 700


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:
    """Like cuda-python's handle object: ``int(stream)`` is the raw handle."""

    def __init__(self, handle: int) -> None:
        self._handle = handle

    def __int__(self) -> int:
        return self._handle

    def getPtr(self) -> int:
        return self._handle

    def __repr__(self) -> str:
        return f"<cudaStream_t 0x{self._handle:x}>"


class _State:
    def __init__(self) -> None:
        self.device: dict[int, bytearray] = {}        # base pointer -> memory
        self.pinned: dict[int, ctypes.Array] = {}     # real host address -> the buffer keeping it alive
        self.streams: dict[int, deque] = {}
        self.next_device = _DEVICE_BASE
        self.handles = itertools.count(0x5000)
        self.sticky: cudaError_t | None = None        # an error from asynchronous work, as CUDA keeps one
        self.calls: list[str] = []                    # names of calls, for tests that check the pattern


state = _State()


def reset() -> None:
    global state
    state = _State()


def live_allocations() -> dict[str, int]:
    return {"device": len(state.device), "pinned": len(state.pinned), "streams": len(state.streams)}


# --- memory lookups (also used by the fake TensorRT)


class FakeCudaError(RuntimeError):
    def __init__(self, code: cudaError_t, message: str) -> None:
        super().__init__(message)
        self.code = code


def _device_range(ptr: int, nbytes: int) -> tuple[bytearray, int]:
    ptr = int(ptr)
    for base, memory in state.device.items():
        if base <= ptr < base + len(memory):
            if ptr + nbytes > base + len(memory):
                raise FakeCudaError(cudaError_t.cudaErrorIllegalAddress,
                                    f"device access of {nbytes} bytes at +{ptr - base} overruns an allocation "
                                    f"of {len(memory)}")
            return memory, ptr - base
    raise FakeCudaError(cudaError_t.cudaErrorInvalidDevicePointer, f"0x{ptr:x} is not in any device allocation")


def _pinned_range(ptr: int, nbytes: int) -> None:
    ptr = int(ptr)
    for base, buffer in state.pinned.items():
        size = ctypes.sizeof(buffer)
        if base <= ptr < base + size:
            if ptr + nbytes > base + size:
                raise FakeCudaError(cudaError_t.cudaErrorInvalidValue,
                                    f"host access of {nbytes} bytes overruns a pinned allocation of {size}")
            return
    raise FakeCudaError(cudaError_t.cudaErrorInvalidValue,
                        f"0x{ptr:x} is not pinned host memory (this fake wants cudaMallocHost memory for async copies)")


def device_read(ptr: int, nbytes: int) -> bytes:
    memory, offset = _device_range(ptr, nbytes)
    return bytes(memory[offset:offset + nbytes])


def device_write(ptr: int, data: bytes) -> None:
    memory, offset = _device_range(ptr, len(data))
    memory[offset:offset + len(data)] = data


def check_device_range(ptr: int, nbytes: int) -> None:
    _device_range(ptr, nbytes)


def enqueue(stream: int, work) -> None:
    """Run ``work()`` when the stream is synchronised (stream 0, the legacy default stream: at once)."""
    stream = int(stream)
    if stream == 0:
        work()
        return
    if stream not in state.streams:
        raise FakeCudaError(cudaError_t.cudaErrorInvalidResourceHandle, f"stream 0x{stream:x} does not exist")
    state.streams[stream].append(work)


# --- the API


def cudaGetErrorString(error):
    return cudaError_t.cudaSuccess, cudaError_t(error).name.encode()


def cudaGetDeviceCount():
    return cudaError_t.cudaSuccess, 1


def cudaSetDevice(device: int):
    return (cudaError_t.cudaSuccess,) if device == 0 else (cudaError_t.cudaErrorInvalidValue,)


def cudaMalloc(size: int):
    state.calls.append("cudaMalloc")
    if size <= 0:
        return cudaError_t.cudaErrorInvalidValue, 0
    ptr = state.next_device
    state.device[ptr] = bytearray(b"\xa5" * size)    # not zeroed, like CUDA: reading unwritten bytes shows
    state.next_device += (size + _ALIGN - 1) // _ALIGN * _ALIGN + _ALIGN     # a gap before the next one
    return cudaError_t.cudaSuccess, ptr


def cudaFree(ptr: int):
    state.calls.append("cudaFree")
    if state.device.pop(int(ptr), None) is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    return (cudaError_t.cudaSuccess,)


def cudaMallocHost(size: int):
    state.calls.append("cudaMallocHost")
    if size <= 0:
        return cudaError_t.cudaErrorInvalidValue, 0
    buffer = (ctypes.c_uint8 * size)()
    ptr = ctypes.addressof(buffer)
    state.pinned[ptr] = buffer
    return cudaError_t.cudaSuccess, ptr


def cudaFreeHost(ptr: int):
    state.calls.append("cudaFreeHost")
    if state.pinned.pop(int(ptr), None) is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    return (cudaError_t.cudaSuccess,)


def cudaStreamCreate():
    state.calls.append("cudaStreamCreate")
    handle = next(state.handles)
    state.streams[handle] = deque()
    return cudaError_t.cudaSuccess, cudaStream_t(handle)


def cudaStreamDestroy(stream):
    state.calls.append("cudaStreamDestroy")
    queue = state.streams.pop(int(stream), None)
    if queue is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    return (cudaError_t.cudaSuccess,)


def cudaStreamSynchronize(stream):
    state.calls.append("cudaStreamSynchronize")
    queue = state.streams.get(int(stream))
    if queue is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    while queue:
        work = queue.popleft()
        try:
            work()
        except FakeCudaError as exc:
            state.sticky = exc.code
            queue.clear()
    if state.sticky is not None:
        return (state.sticky,)
    return (cudaError_t.cudaSuccess,)


def cudaMemcpyAsync(dst, src, count: int, kind, stream):
    state.calls.append("cudaMemcpyAsync")
    dst, src, count = int(dst), int(src), int(count)
    try:
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            _pinned_range(src, count)
            check_device_range(dst, count)
            enqueue(stream, lambda: device_write(dst, ctypes.string_at(src, count)))
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            check_device_range(src, count)
            _pinned_range(dst, count)
            enqueue(stream, lambda: ctypes.memmove(dst, device_read(src, count), count))
        else:
            return (cudaError_t.cudaErrorInvalidMemcpyDirection,)
    except FakeCudaError as exc:
        return (exc.code,)
    return (cudaError_t.cudaSuccess,)
