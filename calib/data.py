"""Calibration images: a folder, a video, a COCO-format dataset or the synthetic generator.

``open_calibration_data(spec, count, meta)`` picks ``count`` images spread
evenly over what the source holds (a video's frames from start to end, not
its first seconds) and says, before reading a pixel, which inputs those are:
:attr:`CalibrationData.fingerprint` lists each one with its size and
modification time (or, for the generator, its seed and the generator's own
source), so a calibration cache can be keyed on it. The images are read
through :mod:`rtpose.sources` and preprocessed by
:func:`rtpose.preprocess.preprocess`, the very letterbox and normalisation
the runtime applies, in the model's own input format.

Specs:

- ``synthetic`` or ``synthetic:SEED``: scenes from rtpose's generator at the
  model's input size (seed 1000 by default, apart from the seeds the README's
  datasets use);
- a ``.json`` file, or a folder holding ``annotations.json``: a COCO-format
  dataset, images from ``<json dir>/images``;
- a folder: its images (``rtpose.sources.IMAGE_SUFFIXES``), in name order;
- anything else: a video file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtpose.model_meta import ModelMeta
from rtpose.preprocess import preprocess
from rtpose.sources import IMAGE_SUFFIXES, ImageFolderSource, SourceError, VideoFileSource

SYNTHETIC = "synthetic"
SYNTHETIC_SEED = 1000          # not one of the seeds of the README's train/val/test sets (1, 2, 3, 100)
MIN_IMAGES = 32                # fewer than this: ranges from too little data; warned about, not refused


class CalibrationError(ValueError):
    """Calibration input that cannot be used; one line that names it."""


@dataclass
class CalibrationData:
    kind: str                           # "folder", "video", "coco" or "synthetic"
    name: str                           # what the user gave
    count: int                          # images that will be used
    available: int | None               # images the source holds (None: the generator, unlimited)
    fingerprint: list[str]              # one line per input: identity for the cache key
    _read: object = field(repr=False)   # () -> iterator of BGR images, in order

    def describe(self) -> str:
        if self.kind == SYNTHETIC:
            return f"{self.count} synthetic scenes ({self.name})"
        of = f" of {self.available}" if self.available and self.available != self.count else ""
        unit = "frames" if self.kind == "video" else "images"
        return f"{self.count}{of} {unit} from {self.name}"

    def warnings(self, requested: int) -> list[str]:
        notes = []
        if self.count < requested:
            notes.append(f"{self.name} holds {self.count} images; {requested} were asked for")
        if self.count < MIN_IMAGES:
            notes.append(f"calibrating on {self.count} images: ranges from fewer than {MIN_IMAGES} images "
                         f"may not cover what the model sees; use more for a model you deploy")
        return notes

    def images(self) -> Iterator[np.ndarray]:
        """The BGR images, in order (read now, not kept)."""
        yield from self._read()

    def batches(self, meta: ModelMeta) -> Iterator[np.ndarray]:
        """Each image as the runtime feeds it: a batch of one in ``meta``'s input format."""
        for image in self.images():
            yield preprocess(image, meta)[0]


def open_calibration_data(spec: str | Path, count: int, meta: ModelMeta) -> CalibrationData:
    """``count`` images from ``spec`` (see the module docstring); raises :class:`CalibrationError`."""
    if count < 1:
        raise CalibrationError(f"--images must be at least 1, got {count}")
    text = str(spec)
    if text == SYNTHETIC or text.startswith(SYNTHETIC + ":"):
        return _synthetic(text, count, meta)
    path = Path(text)
    if not path.exists():
        raise CalibrationError(f"calibration data not found: {path}")
    if path.suffix.lower() == ".json":
        return _coco(path, count)
    if path.is_dir():
        if (path / "annotations.json").is_file():
            return _coco(path / "annotations.json", count)
        return _folder(path, count)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _files([path], str(path), "folder", 1)
    return _video(path, count)


def spread(available: int, count: int) -> list[int]:
    """``min(count, available)`` indices spread evenly over ``range(available)``, first and last included."""
    if count >= available:
        return list(range(available))
    return sorted({int(round(i)) for i in np.linspace(0, available - 1, count)})


def _stat_line(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()} {st.st_size} {st.st_mtime_ns}"


def _folder(folder: Path, count: int) -> CalibrationData:
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise CalibrationError(f"cannot read the calibration folder {folder}: "
                               f"{exc.strerror or type(exc).__name__}") from None
    if not files:
        raise CalibrationError(f"the calibration folder {folder} holds no images "
                               f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    chosen = [files[i] for i in spread(len(files), count)]
    return _files(chosen, str(folder), "folder", len(files))


def _files(files: list[Path], name: str, kind: str, available: int) -> CalibrationData:
    try:
        fingerprint = [_stat_line(p) for p in files]
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration image: {exc}") from None

    def read():
        source = ImageFolderSource(files[0].parent, files)
        while (frame := source.read()) is not None:
            yield frame.image

    return CalibrationData(kind, name, len(files), available, fingerprint, read)


def coco_image_root(annotations: Path) -> Path:
    """``<json dir>/images`` as rtpose's datasets have it, or the json's own folder if the images lie beside it."""
    import json
    nested = annotations.parent / "images"
    try:
        first = json.loads(annotations.read_text()).get("images", [{}])[0].get("file_name", "")
    except (OSError, ValueError, AttributeError, IndexError):
        return nested                  # load_keypoint_set says what is wrong with the file
    if first and not (nested / first).is_file() and (annotations.parent / first).is_file():
        return annotations.parent
    return nested


def _coco(annotations: Path, count: int) -> CalibrationData:
    from trainer.annotations import load_keypoint_set  # json + numpy only, no torch
    kset = load_keypoint_set(annotations, coco_image_root(annotations), check_images=False)
    if not kset.images:
        raise CalibrationError(f"{annotations} lists no images")
    chosen = [kset.images[i].path for i in spread(len(kset.images), count)]
    missing = [p for p in chosen if not p.is_file()]
    if missing:
        raise CalibrationError(f"{len(missing)} of the {len(chosen)} calibration images listed in {annotations} "
                               f"are missing (first: {missing[0]})")
    return _files(chosen, str(annotations), "coco", len(kset.images))


def _video(path: Path, count: int) -> CalibrationData:
    try:
        source = VideoFileSource(path)
    except SourceError as exc:
        raise CalibrationError(f"calibration data {path} is not an image folder, a COCO-format dataset or a "
                               f"video OpenCV can read ({exc})") from None
    total = source.frame_count
    source.close()
    if total is None:                 # no frame count in the header: count by decoding
        source, total = VideoFileSource(path), 0
        while source.read() is not None:
            total += 1
        source.close()
    wanted = spread(total, count)
    fingerprint = [_stat_line(path)] + [f"frame {i}" for i in wanted]

    def read():
        source = VideoFileSource(path)
        keep, got = set(wanted), 0
        try:
            while got < len(wanted) and (frame := source.read()) is not None:
                if source.index - 1 in keep:            # the file's number of the frame just read
                    got += 1
                    yield frame.image
        finally:
            source.close()
        if got < len(wanted):
            raise CalibrationError(f"{path}: only {got} of the {len(wanted)} calibration frames decoded")

    return CalibrationData("video", str(path), len(wanted), total, fingerprint, read)


def _synthetic(spec: str, count: int, meta: ModelMeta) -> CalibrationData:
    _, _, seed_text = spec.partition(":")
    try:
        seed = int(seed_text) if seed_text else SYNTHETIC_SEED
    except ValueError:
        raise CalibrationError(f"'{spec}': the synthetic seed must be an integer (synthetic:SEED)") from None
    from rtpose.synthetic import figure, scene
    # The generator's own source is in the key: a changed generator is new data.
    code = hashlib.sha256(Path(scene.__file__).read_bytes() + Path(figure.__file__).read_bytes()).hexdigest()
    config = scene.SceneConfig(width=meta.input_width, height=meta.input_height)
    fingerprint = [f"synthetic seed {seed} scenes 0..{count - 1} {config} generator {code}"]

    def read():
        for index in range(count):
            yield scene.render_scene(scene.image_rng(seed, index), config)[0]

    return CalibrationData(SYNTHETIC, f"seed {seed}, {meta.input_width}x{meta.input_height}", count, None,
                           fingerprint, read)
