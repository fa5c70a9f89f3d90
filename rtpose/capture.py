"""Reading sources in background threads, and gathering their frames for the pipeline.

Each source gets a :class:`SourceReader` thread that reads as fast as the
source delivers and keeps what it read under one of two policies:

- ``latest`` (live sources by default): only the newest frame waits. A frame
  the pipeline had no time for is replaced by the next one and counted as
  dropped, so a slow pipeline shows the present, never a growing backlog.
- ``all`` (files by default): every frame is kept; the reader waits while two
  are already waiting, so nothing is dropped and memory stays bounded.

:class:`Gather` hands the pipeline whatever frames are ready, at most one per
source and ``limit`` in all, so several sources share one inference call.
Latency starts when the reader had the frame (``captured_at``): time spent
waiting here counts.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from rtpose.sources import Source, SourceFrame

POLICIES = ("latest", "all")
_TICK = 0.1          # seconds a wait lasts before it checks for a stop
_KEEP_ALL_DEPTH = 2  # frames a keep-all reader may hold before it waits


@dataclass(frozen=True)
class Captured:
    source: int                # index of the source among the run's sources
    index: int                 # the frame's number in its source: gaps are frames dropped or skipped
    frame: SourceFrame
    captured_at: float         # perf_counter() when the read returned
    read_seconds: float        # how long the read took


def frame_number(frame: SourceFrame, reads_before: int) -> int:
    """The source's own number for the frame (a file's), or its place among the frames read."""
    return frame.index if frame.index is not None else reads_before


def default_policy(source: Source) -> str:
    return "latest" if source.live else "all"


class SourceReader:
    def __init__(self, index: int, source: Source, policy: str, wake: threading.Condition) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown frame policy '{policy}' (choose from {', '.join(POLICIES)})")
        self.index, self.source, self.policy, self.wake = index, source, policy, wake
        self.waiting: deque[Captured] = deque()
        self.read = self.dropped = 0
        self.ended = False
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"read:{source.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    break
                now = time.perf_counter()
                self._keep(Captured(self.index, frame_number(frame, self.read), frame, now, now - started))
        except Exception as exc:  # noqa: BLE001 - handed to the pipeline at the end of the stream
            self.error = exc
        finally:
            with self.wake:
                self.ended = True
                self.wake.notify_all()
            self.source.close()      # in this thread: no read of it is running any more

    def _keep(self, captured: Captured) -> None:
        with self.wake:
            self.read += 1
            if self.policy == "latest":
                if self.waiting:
                    self.waiting.popleft()
                    self.dropped += 1
            else:
                while len(self.waiting) >= _KEEP_ALL_DEPTH and not self._stop.is_set():
                    self.wake.wait(_TICK)
            self.waiting.append(captured)
            self.wake.notify_all()

    def stop(self) -> None:
        self._stop.set()
        self.source.interrupt()
        with self.wake:
            self.wake.notify_all()


class Gather:
    """One reader per source; :meth:`take` returns the frames ready now, oldest sources' turn first."""

    def __init__(self, sources: list[Source], policies: list[str]) -> None:
        self.wake = threading.Condition()
        self.readers = [SourceReader(i, s, p, self.wake) for i, (s, p) in enumerate(zip(sources, policies))]
        self._turn = 0
        for r in self.readers:
            r.start()

    def take(self, limit: int, stop: threading.Event) -> list[Captured] | None:
        """Up to ``limit`` frames, at most one per source; waits for the first. None when all sources ended."""
        n = len(self.readers)
        with self.wake:
            while not stop.is_set():
                order = [self.readers[(self._turn + i) % n] for i in range(n)]
                ready = [r for r in order if r.waiting][:limit]
                if ready:
                    # Sources left out of a full batch go first next time.
                    self._turn = (self.readers.index(ready[-1]) + 1) % n
                    taken = [r.waiting.popleft() for r in ready]
                    self.wake.notify_all()          # keep-all readers may read on
                    return sorted(taken, key=lambda c: c.source)
                if all(r.ended for r in self.readers):
                    return None
                self.wake.wait(_TICK)
        return None

    @property
    def errors(self) -> list[BaseException]:
        return [r.error for r in self.readers if r.error is not None]

    def close(self, wait: float = 10.0) -> None:
        """Stop the readers; each closes its own source once its current read returns."""
        for r in self.readers:
            r.stop()
        deadline = time.monotonic() + wait
        for r in self.readers:
            r.thread.join(max(0.0, deadline - time.monotonic()))
