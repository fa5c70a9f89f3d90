"""The runtime pipeline: capture -> preprocess -> inference -> decode+track+render -> sinks.

Each stage is a thread; bounded queues join them. What travels is a batch:
the frames that were ready, at most one per source (see
:mod:`rtpose.capture`), so several sources share one inference call. Each
:class:`Frame` record gathers its letterbox, outputs, people and the time it
spent in each stage, and is written to its own source's sinks. An
:class:`EndOfStream` marker follows the last batch and carries the error if a
stage failed. Batches never overtake each other (one thread per stage, FIFO
queues), so output order is capture order.

Stopping:
- end of the source: the marker flows through and every frame is written;
- Ctrl-C (:meth:`Pipeline.request_stop`) or ``max_frames``: capture stops, frames in flight drain;
- a source breaks (a file that stops decoding, a stream that never came
  back): the other sources go on; at the end, the error;
- another stage fails: ``abort`` is set, every stage leaves at its next queue
  operation, and :meth:`Pipeline.run` raises that error after the sinks are closed.

The same stage functions run in one thread by :meth:`Pipeline.run_sequential`,
so ``rtpose bench`` can measure what the threads gain.

A top-down model (``topdown``, see :mod:`rtpose.topdown`) adds a stage
after decoding, in the decode+render thread: the engine's (bottom-up)
people give the boxes, the top-down model estimates each person's keypoints
in a crop of the frame, and its people replace the bottom-up ones.

Tracking (``RunOptions.track``) keeps one :class:`rtpose.tracking.PoseTracker`
per source. It runs in the decode+render thread, which sees each source's
frames one at a time and in order, as a tracker must.

With ``RunOptions.decode_processes`` (see :mod:`rtpose.decode_workers`) the
inference thread hands each frame's outputs to a worker process right after
the engine, and the decode+render thread waits for its people in order: the
"inference" time then includes the hand-over, and "decode" is the wait.
The sequential run always decodes in its own thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from rtpose.capture import Captured, Gather, default_policy, frame_number
from rtpose.decode_workers import DecodeWorkers, Pending
from rtpose.decoder import People
from rtpose.engine import Engine
from rtpose.fast_decoder import decode_outputs
from rtpose.model_meta import DecoderConfig
from rtpose.preprocess import Letterbox, preprocess
from rtpose.render import draw_overlay, draw_people, draw_track_ids
from rtpose.sinks import Sink, StopRequested
from rtpose.sources import Source
from rtpose.topdown import TopDown, boxes_from_people
from rtpose.tracking import PoseTracker, TrackerConfig

# "top-down" is timed only in runs with a top-down model, "track" only in runs that track.
STAGES = ("capture", "preprocess", "inference", "decode", "top-down", "track", "render", "sink")
THREADS = ("capture", "preprocess", "inference", "decode+render", "sink")
_TICK = 0.1   # seconds a blocked queue operation waits before checking for abort


@dataclass
class Frame:
    index: int                         # frame number within its source (gaps: frames dropped or skipped)
    timestamp: float
    image: np.ndarray
    captured_at: float                 # perf_counter() when the frame had been read: latency starts here
    name: str = ""
    source: int = 0                    # which of the run's sources
    batch: int = 1                     # frames in the inference call this frame was part of
    queue_depths: tuple[int, ...] = ()  # batches waiting in each queue when this one was captured
    letterbox: Letterbox | None = None
    tensor: np.ndarray | None = None
    outputs: tuple[np.ndarray, ...] | None = None     # the model's outputs for this frame
    pending: Pending | None = None       # its decoding in a worker process (RunOptions.decode_processes)
    people: People | None = None
    track_ids: np.ndarray | None = None   # per person, when its source is tracked
    smoothed: bool = False                # people's keypoints are the tracker's smoothed ones
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
    policy: str | None = None          # "latest" or "all"; None: latest for live sources, all for files
    max_batch: int | None = None       # frames per inference call; None: one per source, as the engine allows
    max_frames: int | None = None      # stop capturing after this many frames (all sources together)
    # Batches in the pipeline at once, with a latest-frame source: the capture
    # thread takes the newest frame only when one leaves, and (above 1) only
    # about one preprocessing time before the engine is expected to be free
    # (see _InferenceTurn), so a frame barely waits for the engine. 2 keeps the
    # engine busy while the previous batch is decoded, drawn and written.
    in_flight: int = 2
    track: TrackerConfig | None = None   # identities across frames (and smoothed keypoints); None: no tracking
    # Draw people and overlay: None draws only for a source with a sink that uses
    # the pixels (a video, a window), so a JSON-only run skips drawing.
    render: bool | None = None
    # Decode in this many worker processes (rtpose.decode_workers), in the
    # threaded run; 0: in the decode+render thread.
    decode_processes: int = 0


Batch = list[Frame]


class Pipeline:
    """``sinks[i]`` receive the frames of ``sources[i]``; ``topdown``: the engine's people are its person boxes."""

    def __init__(self, sources: list[Source], engine: Engine, sinks: list[list[Sink]],
                 options: RunOptions = RunOptions(), on_frame: Callable[[Frame], None] | None = None,
                 topdown: TopDown | None = None) -> None:
        if len(sinks) != len(sources):
            raise ValueError(f"{len(sources)} sources but sinks for {len(sinks)}")
        self.sources, self.engine, self.sinks, self.options = sources, engine, sinks, options
        self.on_frame, self.topdown = on_frame, topdown
        self.meta = engine.meta
        # The people written, drawn and tracked are the top-down model's when there is one.
        self.skeleton = (topdown or engine).meta.skeleton
        self.decoder: DecoderConfig = replace(engine.meta.decoder, **options.decoder)
        self.batch_limit = _batch_limit(len(sources), options.max_batch, getattr(engine, "max_batch", 1))
        self.frames: list[Frame] = []          # finished frames, without their images
        self.stop_capture = threading.Event()
        self.abort = threading.Event()
        self.gather: Gather | None = None
        self._queues: list[queue.Queue] = []
        self._recent = [deque(maxlen=30) for _ in sources]   # render times, for the overlay's FPS
        self._reads = [0] * len(sources)      # frames read per source, in run_sequential
        self._captured = 0
        self._slots: threading.Semaphore | None = None   # see RunOptions.in_flight
        self._turn: _InferenceTurn | None = None          # likewise, with more than one in flight
        self._decoders: DecodeWorkers | None = None       # see RunOptions.decode_processes
        self.running_since: float | None = None
        self.draws = [options.render if options.render is not None
                      else any(getattr(s, "uses_pixels", True) for s in source_sinks) for source_sinks in sinks]
        # One tracker per source (a tracker sees one source's frames in order); none without tracking.
        self.trackers = [PoseTracker(self.skeleton, options.track) for _ in sources] if options.track else []

    def _decode_steps(self) -> list[tuple[str, Callable[[Batch], None]]]:
        """decode, top-down (with a top-down model), track (when tracking), render: the decode+render thread's work."""
        top_down = [("top-down", self.estimate_top_down)] if self.topdown else []
        tracking = [("track", self.track)] if self.trackers else []
        return [("decode", self.decode), *top_down, *tracking, ("render", self.render)]

    # --- stage functions: each fills its part of every frame of a batch

    def _frame(self, c: Captured) -> Frame:
        frame = Frame(c.index, c.frame.timestamp, c.frame.image, c.captured_at, c.frame.name,
                      source=c.source, queue_depths=tuple(q.qsize() for q in self._queues))
        frame.times["capture"] = c.read_seconds
        return frame

    def preprocess(self, batch: Batch) -> None:
        for f in batch:
            f.tensor, f.letterbox = preprocess(f.image, self.meta)

    def infer(self, batch: Batch) -> None:
        if self._turn is not None:
            self._turn.started(batch[0].times["preprocess"])
        outputs = self.engine.infer(np.concatenate([f.tensor for f in batch]))
        if self._turn is not None:
            self._turn.finished()
        for i, f in enumerate(batch):
            f.outputs = tuple(o[i] for o in outputs)
            f.tensor = None
            f.batch = len(batch)
            if self._decoders is not None:
                f.pending = self._decoders.submit(f.outputs, self._get)
                if f.pending is not None:
                    f.outputs = None

    def decode(self, batch: Batch) -> None:
        for f in batch:
            if f.pending is not None:
                people, f.pending = self._decoders.result(f.pending), None
            else:
                people = decode_outputs(f.outputs, self.meta, self.decoder)
            f.people = people.map_xy(f.letterbox.to_original)
            f.outputs = None

    def estimate_top_down(self, batch: Batch) -> None:
        for f in batch:
            f.people = self.topdown.estimate(f.image, *boxes_from_people(f.people))

    def track(self, batch: Batch) -> None:
        for f in batch:
            tracker = self.trackers[f.source]
            f.track_ids, f.people = tracker.update(f.people, f.image, f.timestamp)
            f.smoothed = tracker.config.smoothing is not None

    def render(self, batch: Batch) -> None:
        for f in (f for f in batch if self.draws[f.source]):
            # The original pixels are not needed after this stage: draw on them.
            colours = None if f.track_ids is None else f.track_ids.tolist()
            image = draw_people(f.image, f.people, self.skeleton, self.options.draw_min_score, colours)
            if f.track_ids is not None:
                draw_track_ids(image, f.people, f.track_ids, self.options.draw_min_score)
            now = time.perf_counter()
            recent = self._recent[f.source]
            recent.append(now)
            if self.options.overlay:
                fps = (len(recent) - 1) / (now - recent[0]) if len(recent) > 1 else 0.0
                lines = [f"{fps:5.1f} FPS  {1000 * (now - f.captured_at):4.0f} ms", f"{len(f.people)} people"]
                if self.gather and self.gather.readers[f.source].policy == "latest":
                    lines.append(f"{self.gather.readers[f.source].dropped} dropped")
                draw_overlay(image, lines)
            f.rendered = image

    def sink(self, batch: Batch) -> None:
        for f in batch:
            for s in self.sinks[f.source]:
                try:
                    s.write(f)
                except StopRequested:
                    self.stop_capture.set()

    def _finish(self, batch: Batch) -> None:
        if self._slots is not None:
            self._slots.release()
        now = time.perf_counter()
        for frame in batch:
            frame.done_at = now
            frame.image = frame.rendered = None     # keep the record, not the pixels
            self.frames.append(frame)
            if self.on_frame:
                self.on_frame(frame)

    def _enough(self) -> bool:
        return self.options.max_frames is not None and self._captured >= self.options.max_frames

    # --- threaded run

    def run(self) -> list[Frame]:
        """Run to the end of the sources (or a stop); raises the first error, after cleanup."""
        self._queues = q = [queue.Queue(maxsize=self.options.queue_size) for _ in range(4)]
        errors: list[BaseException] = []
        policies = [self.options.policy or default_policy(s) for s in self.sources]
        workers = [
            threading.Thread(target=self._capture_loop, args=(q[0], errors), name=THREADS[0]),
            self._worker(THREADS[1], q[0], q[1], [("preprocess", self.preprocess)], errors),
            self._worker(THREADS[2], q[1], q[2], [("inference", self.infer)], errors),
            self._worker(THREADS[3], q[2], q[3], self._decode_steps(), errors),
            self._worker(THREADS[4], q[3], None, [("sink", self.sink)], errors),
        ]
        if "latest" in policies:
            self._slots = threading.Semaphore(max(1, self.options.in_flight))
            if self.options.in_flight > 1:
                self._turn = _InferenceTurn()
        try:
            if self.options.decode_processes:
                # Frames between inference and decoding: the queue's batches, one being decoded, one submitting.
                slots = (self.options.queue_size + 2) * self.batch_limit
                self._decoders = DecodeWorkers(self.options.decode_processes, self.meta, self.decoder, slots)
            self.running_since = time.perf_counter()     # for FPS: after the decode workers' start-up
            self.gather = Gather(self.sources, policies)
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
        stop = _AnyEvent(self.stop_capture, self.abort)
        while not stop.is_set() and not self._enough():
            if self._slots is not None and not self._slots.acquire(timeout=_TICK):
                continue
            if self._turn is not None:
                self._turn.wait(stop)
            taken = self.gather.take(self.batch_limit, stop)
            if taken is None:
                break
            if self._turn is not None:
                self._turn.taken()
            batch = [self._frame(c) for c in taken]
            self._captured += len(batch)
            if not self._put(out, batch):
                return
        # A broken source ends its stream but not the run: frames read before
        # the break (and the other sources' frames) flow through and are written.
        failures = self.gather.errors
        errors.extend(failures)
        self._put(out, EndOfStream(failures[0] if failures else None))

    def _worker(self, name: str, inbox: queue.Queue, out: queue.Queue | None,
                steps: list[tuple[str, Callable[[Batch], None]]], errors: list) -> threading.Thread:
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
                        _timed(stage, step, item)
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
        """Read, infer, decode, render and write in turn; the sources are read in this thread too."""
        active = list(range(len(self.sources)))
        try:
            while active and not self.stop_capture.is_set() and not self._enough():
                batch = []
                for i in list(active)[:self.batch_limit]:
                    started = time.perf_counter()
                    read = self.sources[i].read()
                    if read is None:
                        active.remove(i)
                        continue
                    now = time.perf_counter()
                    batch.append(self._frame(Captured(i, frame_number(read, self._reads[i]), read, now,
                                                      now - started)))
                    self._reads[i] += 1
                if not batch:
                    continue
                self._captured += len(batch)
                for stage, step in (("preprocess", self.preprocess), ("inference", self.infer),
                                    *self._decode_steps(), ("sink", self.sink)):
                    _timed(stage, step, batch)
                self._finish(batch)
        finally:
            self.close()
        return self.frames

    def source_report(self) -> list[dict]:
        """Per source: frames read, dropped by the latest-frame policy, written, reconnects, damaged ones skipped."""
        written = [0] * len(self.sources)
        for f in self.frames:
            written[f.source] += 1
        report = []
        for i, source in enumerate(self.sources):
            reader = self.gather.readers[i] if self.gather else None
            report.append({"source": source.name, "policy": reader.policy if reader else "all",
                           "read": reader.read if reader else written[i], "dropped": reader.dropped if reader else 0,
                           "written": written[i], "reconnects": getattr(source, "reconnects", 0),
                           "skipped": getattr(source, "skipped", 0)})
        return report

    def close(self) -> None:
        """Finalise every sink (a playable file even after a failure), release the sources, stop decode workers."""
        if self._decoders is not None:
            self._decoders.close()
            self._decoders = None
        close_all(s for sinks in self.sinks for s in sinks)
        if self.gather is not None:
            self.gather.close()              # the readers close their sources
        else:
            for source in self.sources:
                source.close()


def close_all(things) -> None:
    """Close each thing that is not None; one that fails to close does not keep the others open."""
    for thing in things:
        if thing is None:
            continue
        try:
            thing.close()
        except Exception:  # noqa: BLE001 - closing the others matters more
            pass


def _timed(stage: str, step: Callable[[Batch], None], batch: Batch) -> None:
    """Run one stage over a batch; each frame spent the whole of it in that stage."""
    started = time.perf_counter()
    step(batch)
    elapsed = time.perf_counter() - started
    for f in batch:
        f.times[stage] = elapsed


def _batch_limit(sources: int, asked: int | None, engine_max: int | None) -> int:
    limits = [sources] + [x for x in (asked, engine_max) if x is not None]
    return max(1, min(limits))


class _InferenceTurn:
    """When the capture thread should take a live frame, with more than one batch in flight.

    Taken as soon as a slot frees, a frame would be preprocessed and then wait
    behind the batch in inference: up to one inference time of latency that
    buys nothing. Taken about one preprocessing time before the engine is
    expected to be free (from a moving average of recent inference times), it
    reaches the engine a few ms before it frees: about 6 ms less latency on a
    saturated stream, the engine still kept busy (benchmarks/README.md).
    """

    def __init__(self, smoothing: float = 0.2, handover: float = 0.006) -> None:
        self._changed = threading.Condition()
        self._smoothing = smoothing
        # Seconds earlier still: for taking the frame, passing it between threads, and letting the
        # engine's thread take the interpreter back when inference returns (Python hands it over every
        # 5 ms): preprocessing that ends just as inference does made inference 5 ms slower (measured).
        self._handover = handover
        self._ahead = 0                 # batches taken that have not reached the engine yet
        self._running_since: float | None = None    # perf_counter() the running inference began; None: idle
        self._inference = self._preprocess = None   # moving averages, seconds

    def _average(self, old: float | None, new: float) -> float:
        return new if old is None else old + self._smoothing * (new - old)

    def taken(self) -> None:
        with self._changed:
            self._ahead += 1

    def started(self, preprocess_seconds: float) -> None:
        with self._changed:
            self._ahead -= 1
            self._preprocess = self._average(self._preprocess, preprocess_seconds)
            self._running_since = time.perf_counter()
            self._changed.notify_all()

    def finished(self) -> None:
        with self._changed:
            self._inference = self._average(self._inference, time.perf_counter() - self._running_since)
            self._running_since = None
            self._changed.notify_all()

    def wait(self, stop: "_AnyEvent") -> None:
        """Until no batch is on its way to the engine and the running one is about to end."""
        with self._changed:
            while not stop.is_set():
                lead = 0.0 if self._running_since is None else (
                    self._running_since + (self._inference or 0.0) - self._preprocess - self._handover
                    - time.perf_counter())
                if self._ahead == 0 and lead <= 0:
                    return
                self._changed.wait(min(lead, _TICK) if self._ahead == 0 else _TICK)


class _AnyEvent:
    """Set when either event is: what :meth:`Gather.take` waits on."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)
