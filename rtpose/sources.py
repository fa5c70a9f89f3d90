"""Where frames come from: a video file, an image, a folder of images, a camera.

``open_source(spec)`` turns what the user typed after ``--source`` into a
:class:`Source`. Every problem opening or reading one is a
:class:`SourceError` with one line that names the source.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class SourceError(RuntimeError):
    pass


@dataclass(frozen=True)
class SourceFrame:
    image: np.ndarray
    timestamp: float          # seconds: position in the media for files, wall clock for cameras
    name: str = ""            # the file name, for image folders


class Source(Protocol):
    name: str
    fps: float                # 0 when unknown
    frame_count: int | None   # None for live sources
    live: bool

    def read(self) -> SourceFrame | None:
        """The next frame, or None at the end. Raises SourceError when the source breaks."""

    def close(self) -> None: ...


def open_source(spec: str) -> Source:
    camera = _camera_index(spec)
    if camera is not None:
        return CameraSource(camera)
    path = Path(spec)
    if path.is_dir():
        return ImageFolderSource(path)
    if not path.exists():
        raise SourceError(f"source not found: {spec}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource.single(path)
    return VideoFileSource(path)


def _camera_index(spec: str) -> int | None:
    if spec == "camera":
        return 0
    match = re.fullmatch(r"(?:camera:)?(\d+)", spec)
    return int(match.group(1)) if match else None


class VideoFileSource:
    live = False

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise SourceError(f"{path} is not a video or image that OpenCV can read")
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 0.0
        self.frame_count = count if count > 0 else None
        self.index = 0
        first = self._grab()
        if first is None:
            raise SourceError(f"{path} is not a video or image that OpenCV can read (no frame decodes)")
        self._pending: np.ndarray | None = first

    def _grab(self) -> np.ndarray | None:
        ok, image = self.capture.read()
        return image if ok and image is not None else None

    def read(self) -> SourceFrame | None:
        image, self._pending = (self._pending, None) if self._pending is not None else (self._grab(), None)
        if image is None:
            # Containers without an index estimate their frame count from the
            # duration and can overshoot by a frame or two: only a larger
            # shortfall is a file that broke off.
            if self.frame_count is not None and self.index < self.frame_count - max(2, self.frame_count // 100):
                raise SourceError(f"{self.name} stopped decoding at frame {self.index} of {self.frame_count}")
            return None
        timestamp = self.index / self.fps if self.fps else float(self.index)
        self.index += 1
        return SourceFrame(image, timestamp)

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

    def close(self) -> None:
        pass


class CameraSource:
    live = True
    frame_count = None

    def __init__(self, index: int) -> None:
        self.name = f"camera:{index}"
        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise SourceError(f"camera {index} did not open (is one connected, and free?)")
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 0.0

    def read(self) -> SourceFrame | None:
        ok, image = self.capture.read()
        if not ok or image is None:
            raise SourceError(f"{self.name} stopped delivering frames")
        return SourceFrame(image, time.time())

    def close(self) -> None:
        self.capture.release()
