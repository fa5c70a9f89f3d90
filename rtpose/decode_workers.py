"""Decoding in worker processes, for a pipeline whose engine is faster than its Python.

The decoder is numpy on small arrays and holds the interpreter lock, so with
a fast engine (a GPU) the pipeline's threads take turns with it rather than
overlap (benchmarks/README.md, "CUDA"). ``rtpose run --decode-processes N``
moves decoding into N processes:

- the inference thread copies each frame's outputs into a slot of one shared
  memory block and sends the slot's number (the outputs of a 320x256 model
  are 3.2 MB: pickled through a pipe they cost more than decoding them);
- a worker decodes from that slot with the runtime's decoder
  (:func:`rtpose.fast_decoder.decode_outputs`) and sends back the people;
- the decode thread waits for each frame's people in order and frees the slot.

So several frames decode at once, while the pipeline's threads capture,
draw and write. The slots are as many as frames can be between inference and
decoding; a frame waits for a free slot, which holds the engine back as a
full queue would. Workers are started with ``spawn`` (safe beside threads).
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from rtpose.decoder import People
from rtpose.fast_decoder import decode_outputs
from rtpose.model_meta import DecoderConfig, ModelMeta

_ALIGN = 64

Layout = tuple[tuple[tuple[int, ...], str, int], ...]     # per output: shape, dtype, offset in a slot


@dataclass(frozen=True)
class Pending:
    slot: int
    future: Future


class DecodeWorkers:
    """``processes`` decoding processes and ``slots`` frames of outputs in shared memory."""

    def __init__(self, processes: int, meta: ModelMeta, config: DecoderConfig, slots: int) -> None:
        self.slots = slots
        self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start, initargs=(meta, config))
        try:
            for started in [self._pool.submit(_ready) for _ in range(processes)]:
                started.result()         # the workers' start-up (imports) before the first frame, not in it
        except BrokenProcessPool:
            self._pool.shutdown(cancel_futures=True)
            raise RuntimeError(f"the {processes} decoding processes could not start (--decode-processes)") from None
        self._memory: shared_memory.SharedMemory | None = None
        self._layout: Layout = ()
        self._slot_bytes = 0
        self._free: queue.Queue[int] = queue.Queue()

    def _allocate(self, outputs: tuple[np.ndarray, ...]) -> None:
        """One block for ``slots`` frames, laid out by the first frame's outputs (a model's shapes are fixed)."""
        layout, offset = [], 0
        for o in outputs:
            layout.append((tuple(o.shape), o.dtype.str, offset))
            offset += -(-o.nbytes // _ALIGN) * _ALIGN
        self._layout, self._slot_bytes = tuple(layout), offset
        self._memory = shared_memory.SharedMemory(create=True, size=offset * self.slots)
        for slot in range(self.slots):
            self._free.put(slot)

    def submit(self, outputs: tuple[np.ndarray, ...], take: Callable[[queue.Queue], int | None]) -> Pending | None:
        """Start decoding one frame's outputs; None if no slot came free.

        ``take(queue)`` waits for a free slot the caller's way (the pipeline's
        queue get, which gives up, with None, when the run aborts).
        """
        if self._memory is None:
            self._allocate(outputs)
        slot = take(self._free)
        if slot is None:
            return None
        base = slot * self._slot_bytes
        for o, (shape, dtype, _) in zip(outputs, self._layout):
            if o.shape != shape or o.dtype.str != dtype:
                raise ValueError(f"the engine's outputs changed shape or type mid-run: {o.dtype} {list(o.shape)} "
                                 f"after {np.dtype(dtype)} {list(shape)}")
        for view, o in zip(_views(self._memory, self._layout, base), outputs):
            np.copyto(view, o)
        future = self._pool.submit(_decode, self._memory.name, self._layout, base)
        return Pending(slot, future)

    def result(self, pending: Pending) -> People:
        """The people of a submitted frame (waits for them); its slot is free again after."""
        try:
            return pending.future.result()
        except BrokenProcessPool:
            raise RuntimeError("a decoding process died (--decode-processes); run without it to see why") from None
        finally:
            self._free.put(pending.slot)

    def close(self) -> None:
        """Stops the workers and frees the shared memory; safe to call twice."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._memory is not None:
            self._memory.close()
            self._memory.unlink()
            self._memory = None


def _views(memory: shared_memory.SharedMemory, layout: Layout, base: int) -> tuple[np.ndarray, ...]:
    """One slot's outputs as arrays over the block, for the pipeline to write and a worker to read."""
    return tuple(np.ndarray(shape, dtype, buffer=memory.buf, offset=base + offset) for shape, dtype, offset in layout)


# --- in the worker processes


def _attach(name: str) -> shared_memory.SharedMemory:
    """The pipeline's block; the pipeline's process owns it and unlinks it (``track=False`` from Python 3.13;
    before, spawned workers share the pipeline's resource tracker, which forgets the block at its unlink)."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)
    except TypeError:
        return shared_memory.SharedMemory(name=name)


_worker: dict = {}


def _start(meta: ModelMeta, config: DecoderConfig) -> None:
    # Ctrl-C reaches the whole process group: the pipeline stops and then stops its workers, which must
    # not print a traceback of their own meanwhile.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker.update(meta=meta, config=config, memory=None)


def _ready() -> None:
    pass


def _decode(name: str, layout: Layout, base: int) -> People:
    memory = _worker["memory"]
    if memory is None or memory.name != name:
        memory = _worker["memory"] = _attach(name)
    return decode_outputs(_views(memory, layout, base), _worker["meta"], _worker["config"])
