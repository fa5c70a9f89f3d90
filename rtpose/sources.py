"""Where frames come from: a video file, an image, a folder of images, a camera, a network stream.

``open_source(spec)`` turns what the user typed after ``--source`` into a
:class:`Source`. Every problem opening or reading one is a
:class:`SourceError` with one line that names the source.

Live sources (cameras and streams) reconnect when they drop: they reopen with
a growing wait between attempts and give up, with a message saying so, when
nothing came back within :attr:`Reconnect.give_up_after` seconds. How their
frames are kept while the pipeline is busy (newest only, or every one) is the
business of :mod:`rtpose.capture`.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "udp", "srt", "rtp")


class SourceError(RuntimeError):
    pass


@dataclass(frozen=True)
class SourceFrame:
    image: np.ndarray
    timestamp: float          # seconds: position in the media for files, wall clock for cameras
    name: str = ""            # the file name, for image folders
    index: int | None = None  # the frame's number in a file; None: numbered as read


class Source(Protocol):
    name: str
    fps: float                # 0 when unknown
    frame_count: int | None   # None for live sources
    live: bool

    def read(self) -> SourceFrame | None:
        """The next frame, or None at the end. Raises SourceError when the source breaks."""

    def interrupt(self) -> None:
        """Ask a read blocked in another thread to return soon (a live source waiting to reconnect)."""

    def close(self) -> None:
        """Release the source; only once no read is running."""


@dataclass(frozen=True)
class Reconnect:
    """How a live source that dropped is reopened: waits double from ``first_wait`` up to ``max_wait``."""

    give_up_after: float = 10.0   # seconds without a frame before the source is given up
    first_wait: float = 0.25
    max_wait: float = 2.0
    read_timeout: float = 5.0     # a stream that sends nothing for this long has stalled

    def __post_init__(self) -> None:
        if self.give_up_after < 0 or self.first_wait <= 0 or self.read_timeout <= 0:
            raise ValueError("reconnect waits and timeouts must be positive")


def open_source(spec: str, reconnect: Reconnect = Reconnect()) -> Source:
    if _is_stream(spec):
        return StreamSource(spec, reconnect)
    camera = _camera_index(spec)
    if camera is not None:
        return CameraSource(camera, reconnect)
    path = Path(spec)
    if path.is_dir():
        return ImageFolderSource(path)
    if not path.exists():
        raise SourceError(f"source not found: {spec}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource.single(path)
    return VideoFileSource(path)


def _is_stream(spec: str) -> bool:
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme.lower() in STREAM_SCHEMES


def _camera_index(spec: str) -> int | None:
    if spec == "camera":
        return 0
    match = re.fullmatch(r"(?:camera:)?(\d+)", spec)
    return int(match.group(1)) if match else None


class VideoFileSource:
    """Every frame of a video file, in order.

    A damaged stretch in the middle (frames that do not decode, then frames
    that do) is skipped and counted in ``skipped``; frame numbers stay those
    of the file. A file that breaks off before the frame count its header
    promised is a :class:`SourceError`, after the frames before the break.
    """

    live = False
    # Consecutive frames that may fail to decode before the file is taken to
    # have ended: a damaged stretch of a few seconds is skipped, not fatal.
    MAX_DAMAGED = 120

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise SourceError(f"{path} is not a video or image that OpenCV can read")
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 0.0
        self.frame_count = count if count > 0 else None
        self.index = 0            # the file's number of the next frame
        self.skipped = 0          # damaged frames skipped so far
        first = self._next_good()
        if first is None:
            raise SourceError(f"{path} is not a video or image that OpenCV can read (no frame decodes)")
        self._pending: np.ndarray | None = first

    def _next_good(self) -> np.ndarray | None:
        """The next frame that decodes, skipping a damaged stretch; None at the end."""
        for failed in range(self.MAX_DAMAGED + 1):
            ok, image = self.capture.read()
            if ok and image is not None:
                self.index += failed
                self.skipped += failed
                return image
        return None

    def read(self) -> SourceFrame | None:
        image, self._pending = (self._pending, None) if self._pending is not None else (self._next_good(), None)
        if image is None:
            # Containers without an index estimate their frame count from the
            # duration and can overshoot by a frame or two: only a larger
            # shortfall is a file that broke off.
            if self.frame_count is not None and self.index < self.frame_count - max(2, self.frame_count // 100):
                raise SourceError(f"{self.name} stopped decoding at frame {self.index} of {self.frame_count}")
            return None
        timestamp = self.index / self.fps if self.fps else float(self.index)
        self.index += 1
        return SourceFrame(image, timestamp, index=self.index - 1)

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        self.capture.release()


class ImageFolderSource:
    live = False
    fps = 0.0

    def __init__(self, folder: Path, files: list[Path] | None = None) -> None:
        self.name = str(folder)
        self.files = files if files is not None else sorted(
            p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.frame_count = len(self.files)
        self.index = 0

    @classmethod
    def single(cls, path: Path) -> "ImageFolderSource":
        source = cls(path.parent, [path])
        source.name = str(path)
        return source

    def read(self) -> SourceFrame | None:
        if self.index >= len(self.files):
            return None
        path = self.files[self.index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"{path} is not an image OpenCV can read")
        self.index += 1
        return SourceFrame(image, float(self.index - 1), path.name)

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


class LiveSource:
    """A camera or stream read through OpenCV, reopened with backoff when it drops.

    Subclasses say how to open it (:meth:`_open`) and what to call it.
    """

    live = True
    frame_count = None
    fps = 0.0

    def __init__(self, name: str, reconnect: Reconnect) -> None:
        self.name, self.reconnect = name, reconnect
        self.reconnects = 0                    # times the source came back after a drop
        self._closed = threading.Event()
        self.capture = self._open()
        if self.capture is None:
            raise SourceError(self._not_opened())
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 0.0

    def _open(self) -> cv2.VideoCapture | None:
        raise NotImplementedError

    def _not_opened(self) -> str:
        raise NotImplementedError

    def read(self) -> SourceFrame | None:
        while not self._closed.is_set():
            ok, image = self.capture.read()
            if ok and image is not None:
                return SourceFrame(image, time.time())
            if not self._come_back():
                return None
        return None

    def _come_back(self) -> bool:
        """Reopen until a frame source is back (True), or :meth:`close` was called (False)."""
        self.capture.release()
        deadline = time.monotonic() + self.reconnect.give_up_after
        wait, attempts = self.reconnect.first_wait, 0
        while time.monotonic() < deadline:
            if self._closed.wait(wait):
                return False
            attempts += 1
            capture = self._open()
            if capture is not None:
                self.capture = capture
                self.reconnects += 1
                return True
            wait = min(2 * wait, self.reconnect.max_wait)
        raise SourceError(f"{self.name} dropped and did not come back within "
                          f"{self.reconnect.give_up_after:g} s ({attempts} attempts to reopen it)")

    def interrupt(self) -> None:
        self._closed.set()

    def close(self) -> None:
        self._closed.set()
        self.capture.release()


class CameraSource(LiveSource):
    def __init__(self, index: int, reconnect: Reconnect = Reconnect()) -> None:
        self.index = index
        super().__init__(f"camera:{index}", reconnect)

    def _open(self) -> cv2.VideoCapture | None:
        capture = cv2.VideoCapture(self.index)
        return capture if capture.isOpened() else None

    def _not_opened(self) -> str:
        return f"camera {self.index} did not open (is one connected, and free?)"


# FFmpeg reads a few MB of a stream to learn its format before the first
# frame; a small probe opens (and reopens) a live stream in well under a second.
_STREAM_OPTIONS = "probesize;32768|analyzeduration;500000"


class StreamSource(LiveSource):
    """RTSP, RTMP, HTTP, TCP, UDP, SRT: anything OpenCV's FFmpeg opens by address."""

    def __init__(self, url: str, reconnect: Reconnect = Reconnect()) -> None:
        self.url = url
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", _STREAM_OPTIONS)
        super().__init__(url, reconnect)

    def _open(self) -> cv2.VideoCapture | None:
        timeout_ms = int(1000 * self.reconnect.read_timeout)
        capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                                               cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
        return capture if capture.isOpened() else None

    def _not_opened(self) -> str:
        return f"stream {self.url} did not open (is the server up, and the address right?)"
