"""Where results go: an annotated video file, JSON lines, a window, or nowhere.

Every sink is closed in the pipeline's ``finally``, so what was written before
a failure is a finished, playable file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from rtpose.decoder import People


class SinkError(RuntimeError):
    pass


class StopRequested(Exception):
    """A sink asks the run to end cleanly (the user closed the window)."""


class Sink(Protocol):
    # Whether write() reads ``frame.rendered``. A run whose sinks all say False
    # skips drawing; a sink without the attribute counts as one that draws.
    uses_pixels: bool

    def write(self, frame) -> None:
        """``frame`` is a :class:`rtpose.pipeline.Frame` with ``people`` set (and ``rendered``, see above)."""

    def close(self) -> None: ...


# Tried in order. MPEG-4 part 2 is in every OpenCV wheel and plays in common
# players (VLC, mpv, ffmpeg, QuickTime); OpenCV's pip wheels have no H.264
# encoder, and probing for one only prints FFmpeg errors.
_FOURCCS = {".mp4": ("mp4v",), ".m4v": ("mp4v",), ".mov": ("mp4v",), ".avi": ("MJPG", "XVID"), ".mkv": ("MJPG",)}


# Room a video needs to be finished: FFmpeg's buffered data and the index it
# writes on close. An MP4 that cannot write its index does not play at all,
# so the sink stops while there is still room rather than when the disk is full.
RESERVE_BYTES = 2 << 20


class VideoSink:
    """An annotated video; stops with a :class:`SinkError`, the file finalised, when its disk runs low.

    OpenCV's writer does not report failed writes, so the free space of the
    output's file system is checked before each frame.
    """

    uses_pixels = True

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in _FOURCCS:
            raise SinkError(f"{self.path}: unsupported video type (use {', '.join(_FOURCCS)})")
        if not self.path.parent.is_dir():
            raise SinkError(f"output folder does not exist: {self.path.parent}")
        self.fps = fps if fps and fps > 0 else 30.0
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def _open(self, width: int, height: int) -> cv2.VideoWriter:
        for code in _FOURCCS[self.path.suffix.lower()]:
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*code), self.fps, (width, height))
            if writer.isOpened():
                self.codec = code
                return writer
            writer.release()
        raise SinkError(f"cannot write video {self.path}: no working encoder")

    def write(self, frame) -> None:
        image = frame.rendered
        free = shutil.disk_usage(self.path.parent).free
        if free < RESERVE_BYTES:
            self.close()
            raise SinkError(f"disk full: {free / 1e6:.1f} MB left beside {self.path}; the video stops at frame "
                            f"{self.frames} and is finalised")
        if self.writer is None:
            self.writer = self._open(image.shape[1], image.shape[0])
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def people_to_json(people: People, ids: np.ndarray | None = None) -> list[dict]:
    """Pixels to 2 decimals, scores to 4 (rounded in numpy: per value in Python it costs ms on a crowd).

    With track ``ids``, each person starts with its ``"id"``.
    """
    keypoints = np.round(people.keypoints.astype(np.float64), 2)
    keypoints[..., 2] = np.round(people.keypoints[..., 2].astype(np.float64), 4)
    scores = np.round(people.scores.astype(np.float64), 4)
    if ids is not None:
        return [{"id": i, "score": score, "keypoints": kps}
                for i, kps, score in zip(np.asarray(ids).tolist(), keypoints.tolist(), scores.tolist())]
    return [{"score": score, "keypoints": kps} for kps, score in zip(keypoints.tolist(), scores.tolist())]


class JsonLinesSink:
    """One line per frame: ``{"frame", "timestamp", "latency_ms", "persons": [{"score", "keypoints": [[x, y, s]]}]}``.

    A tracked source's lines also say ``"smoothed"`` (keypoints One-Euro
    smoothed, or as decoded) and give each person an ``"id"``.

    ``latency_ms`` is from the moment the frame was read to this write. Each
    line is written as it comes (a live run can be followed with ``tail -f``);
    when a write fails (a full disk), a partly written line is cut off, so the
    file ends with the last whole line.
    """

    uses_pixels = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.file = open(self.path, "wb", buffering=0)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from None
        self.size = 0             # bytes of whole lines written

    def write(self, frame) -> None:
        latency = 1000 * (time.perf_counter() - frame.captured_at)
        record = {"frame": frame.index, "timestamp": round(frame.timestamp, 4), "latency_ms": round(latency, 1)}
        if frame.track_ids is not None:
            record["smoothed"] = frame.smoothed
        record["persons"] = people_to_json(frame.people, frame.track_ids)
        if frame.name:
            record["image"] = frame.name
        line = (json.dumps(record) + "\n").encode()
        try:
            written = self.file.write(line)
            if written != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            self._cut_to_whole_lines()
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}; it holds the first "
                            f"{frame.index} frames") from None
        self.size += len(line)

    def _cut_to_whole_lines(self) -> None:
        try:
            self.file.truncate(self.size)
        except OSError:
            pass

    def close(self) -> None:
        self.file.close()


class WindowSink:
    """``--show``: an OpenCV window; q or Esc ends the run."""

    uses_pixels = True

    def __init__(self, title: str = "rtpose") -> None:
        self.title = title

    def write(self, frame) -> None:
        try:
            cv2.imshow(self.title, frame.rendered)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            raise SinkError("cannot open a window here (no display?); drop --show") from None
        if key in (ord("q"), 27):
            raise StopRequested

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
