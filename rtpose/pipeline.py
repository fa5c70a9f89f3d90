"""The runtime pipeline: capture -> preprocess -> inference -> decode+render -> sinks.

Each stage is a thread; bounded queues join them, and one :class:`Frame`
record travels through, gathering the letterbox, the outputs, the people and
each stage's time. An :class:`EndOfStream` marker follows the last frame and
carries the error if a stage failed. Frames never overtake each other (one
thread per stage, FIFO queues), so output order is capture order.

Stopping:
- end of the source: the marker flows through and every frame is written;
- Ctrl-C (:meth:`Pipeline.request_stop`): capture stops, frames in flight drain;
- the source breaks (a file that stops decoding): like the end, then the error;
- another stage fails: ``abort`` is set, every stage leaves at its next queue
  operation, and :meth:`Pipeline.run` raises that error after the sinks are closed.

The same stage functions run in one thread by :meth:`Pipeline.run_sequential`,
so ``rtpose bench`` can measure what the threads gain.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from rtpose.decoder import People, decode
from rtpose.engine import Engine
from rtpose.model_meta import DecoderConfig
from rtpose.preprocess import Letterbox, preprocess
from rtpose.render import draw_overlay, draw_people
from rtpose.sinks import Sink, StopRequested
from rtpose.sources import Source

STAGES = ("capture", "preprocess", "inference", "decode", "render", "sink")
THREADS = ("capture", "preprocess", "inference", "decode+render", "sink")
_TICK = 0.1   # seconds a blocked queue operation waits before checking for abort


@dataclass
class Frame:
    index: int
    timestamp: float
    image: np.ndarray
    captured_at: float                 # perf_counter() when the frame had been read: latency starts here
    name: str = ""
    letterbox: Letterbox | None = None
    tensor: np.ndarray | None = None
    outputs: tuple[np.ndarray, ...] | None = None     # the model's outputs for this frame
    people: People | None = None
    rendered: np.ndarray | None = None
    times: dict[str, float] = field(default_factory=dict)   # stage -> seconds
    done_at: float = 0.0


@dataclass(frozen=True)
class EndOfStream:
    error: BaseException | None = None


@dataclass(frozen=True)
class RunOptions:
    decoder: dict = field(default_factory=dict)   # knobs that replace the model's decoder defaults
    overlay: bool = True
    draw_min_score: float = 0.2
    queue_size: int = 2


class Pipeline:
    def __init__(self, source: Source, engine: Engine, sinks: list[Sink], options: RunOptions = RunOptions(),
                 on_frame: Callable[[Frame], None] | None = None) -> None:
        self.source, self.engine, self.sinks, self.options = source, engine, sinks, options
        self.on_frame = on_frame
        self.meta = engine.meta
        self.decoder: DecoderConfig = replace(engine.meta.decoder, **options.decoder)
        self.frames: list[Frame] = []          # finished frames, without their images
        self.stop_capture = threading.Event()
        self.abort = threading.Event()
        self._recent = deque(maxlen=30)        # render times, for the overlay's FPS
        self._index = 0

    # --- stage functions: each fills its part of the frame

    def capture(self) -> Frame | None:
        started = time.perf_counter()
        read = self.source.read()
        if read is None:
            return None
        now = time.perf_counter()
        frame = Frame(self._index, read.timestamp, read.image, now, read.name)
        self._index += 1
        frame.times["capture"] = now - started
        return frame

    def preprocess(self, frame: Frame) -> None:
        frame.tensor, frame.letterbox = preprocess(frame.image, self.meta)

    def infer(self, frame: Frame) -> None:
        frame.outputs = tuple(o[0] for o in self.engine.infer(frame.tensor))
        frame.tensor = None

    def decode(self, frame: Frame) -> None:
        people = decode(*frame.outputs, self.meta, self.decoder)
        frame.people = people.map_xy(frame.letterbox.to_original)
        frame.outputs = None

    def render(self, frame: Frame) -> None:
        # The original pixels are not needed after this stage: draw on them.
        image = draw_people(frame.image, frame.people, self.meta.skeleton, self.options.draw_min_score)
        now = time.perf_counter()
        self._recent.append(now)
        if self.options.overlay:
            fps = (len(self._recent) - 1) / (now - self._recent[0]) if len(self._recent) > 1 else 0.0
            latency = 1000 * (now - frame.captured_at)
            draw_overlay(image, [f"{fps:5.1f} FPS  {latency:4.0f} ms", f"{len(frame.people)} people"])
        frame.rendered = image

    def sink(self, frame: Frame) -> None:
        for s in self.sinks:
            try:
                s.write(frame)
            except StopRequested:
                self.stop_capture.set()

    def _finish(self, frame: Frame) -> None:
        frame.done_at = time.perf_counter()
        frame.image = frame.rendered = None     # keep the record, not the pixels
        self.frames.append(frame)
        if self.on_frame:
            self.on_frame(frame)

    # --- threaded run

    def run(self) -> list[Frame]:
        """Run to the end of the source (or a stop); raises the first stage error, after cleanup."""
        q = [queue.Queue(maxsize=self.options.queue_size) for _ in range(4)]
        errors: list[BaseException] = []
        workers = [
            threading.Thread(target=self._capture_loop, args=(q[0], errors), name=THREADS[0]),
            self._worker(THREADS[1], q[0], q[1], [("preprocess", self.preprocess)], errors),
            self._worker(THREADS[2], q[1], q[2], [("inference", self.infer)], errors),
            self._worker(THREADS[3], q[2], q[3], [("decode", self.decode), ("render", self.render)], errors),
            self._worker(THREADS[4], q[3], None, [("sink", self.sink)], errors),
        ]
        try:
            for w in workers:
                w.daemon = True
                w.start()
            self._wait(workers)
        finally:
            self.close()
        if errors:
            raise errors[0]
        return self.frames

    def _wait(self, workers: list[threading.Thread]) -> None:
        interrupted = False
        while any(w.is_alive() for w in workers):
            try:
                for w in workers:
                    w.join(_TICK)
            except KeyboardInterrupt:
                if interrupted:          # a second Ctrl-C: stop at once
                    self.abort.set()
                interrupted = True
                self.stop_capture.set()

    def request_stop(self) -> None:
        self.stop_capture.set()

    def _capture_loop(self, out: queue.Queue, errors: list) -> None:
        try:
            while not self.stop_capture.is_set() and not self.abort.is_set():
                frame = self.capture()
                if frame is None:
                    break
                if not self._put(out, frame):
                    return
            self._put(out, EndOfStream())
        except Exception as exc:  # noqa: BLE001 - handed to the caller through `errors`
            # A broken source ends the stream but not the run: frames read
            # before the break still flow through and are written.
            errors.append(exc)
            self._put(out, EndOfStream(exc))

    def _worker(self, name: str, inbox: queue.Queue, out: queue.Queue | None,
                steps: list[tuple[str, Callable[[Frame], None]]], errors: list) -> threading.Thread:
        def loop() -> None:
            try:
                while True:
                    item = self._get(inbox)
                    if item is None:
                        return
                    if isinstance(item, EndOfStream):
                        if out is not None:
                            self._put(out, item)
                        return
                    for stage, step in steps:
                        started = time.perf_counter()
                        step(item)
                        item.times[stage] = time.perf_counter() - started
                    if out is None:
                        self._finish(item)
                    elif not self._put(out, item):
                        return
            except BaseException as exc:  # noqa: BLE001
                self._fail(exc, errors, out)
        return threading.Thread(target=loop, name=name)

    def _fail(self, exc: BaseException, errors: list, out: queue.Queue | None) -> None:
        errors.append(exc)
        self.abort.set()
        if out is not None:
            try:
                out.put_nowait(EndOfStream(exc))
            except queue.Full:
                pass

    def _put(self, q: queue.Queue, item) -> bool:
        while not self.abort.is_set():
            try:
                q.put(item, timeout=_TICK)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self.abort.is_set():
            try:
                return q.get(timeout=_TICK)
            except queue.Empty:
                continue
        return None

    # --- the same work in one thread, for comparison

    def run_sequential(self) -> list[Frame]:
        try:
            while not self.stop_capture.is_set():
                frame = self.capture()
                if frame is None:
                    break
                for stage, step in (("preprocess", self.preprocess), ("inference", self.infer),
                                    ("decode", self.decode), ("render", self.render), ("sink", self.sink)):
                    started = time.perf_counter()
                    step(frame)
                    frame.times[stage] = time.perf_counter() - started
                self._finish(frame)
        finally:
            self.close()
        return self.frames

    def close(self) -> None:
        """Finalise every sink (a playable file even after a failure) and release the source."""
        for s in self.sinks:
            try:
                s.close()
            except Exception:  # noqa: BLE001 - closing the others matters more
                pass
        self.source.close()
