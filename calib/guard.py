"""The accuracy guard: AP of FP32 and INT8 on a validation set, and the layers INT8 must not have.

AP is the one ``rtpose eval`` gives: people from :func:`rtpose.estimate.estimate`
(the runtime's preprocessing and decoder) scored by pycocotools through
:func:`trainer.evaluate.coco_keypoint_eval`. None of it imports torch.

When INT8 costs more AP than allowed, each layer's sensitivity is measured:
the model with only that layer in INT8, its outputs against FP32's on a few
validation images (relative L2 error, averaged over the outputs). Layers are
then kept in FP32 most sensitive first: the smallest number ``k`` of them that
brings the drop within the limit is searched by doubling ``k`` and then
bisecting, so a model with 40 layers needs about 8 AP evaluations, not 40.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calib.data import CalibrationError, coco_image_root, spread
from rtpose.engine import Engine
from rtpose.estimate import estimate
from rtpose.model_meta import ModelMeta

EVAL_BATCH = 8
SENSITIVITY_IMAGES = 8


def require_pycocotools() -> None:
    try:
        import pycocotools.coco  # noqa: F401
    except ImportError:
        raise CalibrationError("the accuracy guard (--val) scores AP with pycocotools, which is not installed: "
                               "pip install 'rtpose[calib]' (or leave out --val)") from None


class ValidationSet:
    """Up to ``max_images`` images of a COCO-format set (spread over it), their annotations, read once."""

    def __init__(self, annotations: str | Path, max_images: int | None = None, images_root: Path | None = None):
        require_pycocotools()
        from pycocotools.coco import COCO

        from trainer.annotations import load_keypoint_set
        self.annotations = Path(annotations)
        if not self.annotations.is_file():
            raise CalibrationError(f"validation annotations not found: {annotations}")
        kset = load_keypoint_set(self.annotations, images_root or coco_image_root(self.annotations))
        if not kset.is_coco_format:
            raise CalibrationError(f"{annotations}: the accuracy guard needs a COCO-format annotation file")
        if not kset.images:
            raise CalibrationError(f"{annotations} lists no images")
        keep = spread(len(kset.images), max_images or len(kset.images))
        self.records = [kset.images[i] for i in keep]
        self.skeleton = kset.skeleton
        data = json.loads(self.annotations.read_text())
        ids = {r.image_id for r in self.records}
        subset = {**data, "images": [im for im in data["images"] if im["id"] in ids],
                  "annotations": [a for a in data.get("annotations", []) if a["image_id"] in ids]}
        with contextlib.redirect_stdout(io.StringIO()):
            self.gt = COCO()
            self.gt.dataset = subset
            self.gt.createIndex()
        self._images: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def check_model(self, meta: ModelMeta) -> None:
        if meta.skeleton.keypoints != self.skeleton.keypoints:
            raise CalibrationError(f"the model's keypoints ({meta.skeleton.name}) are not those of "
                                   f"{self.annotations} ({self.skeleton.name})")

    @property
    def images(self) -> list[np.ndarray]:
        if self._images is None:
            self._images = []
            for record in self.records:
                image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
                if image is None:
                    raise CalibrationError(f"cannot read validation image {record.path}")
                self._images.append(image)
        return self._images

    def ap(self, engine: Engine, progress: Callable[[int], None] | None = None) -> dict[str, float]:
        """COCO keypoint AP/AR of ``engine`` on these images, as ``rtpose eval`` computes it."""
        from trainer.evaluate import coco_keypoint_eval, people_to_coco
        results = []
        for start in range(0, len(self.records), EVAL_BATCH):
            records = self.records[start:start + EVAL_BATCH]
            for record, people in zip(records, estimate(engine, self.images[start:start + EVAL_BATCH])):
                results.extend(people_to_coco(record.image_id, people))
            if progress:
                progress(len(records))
        stats, _ = coco_keypoint_eval(self.gt, results, self.skeleton)
        return stats


@dataclass
class LayerSensitivity:
    name: str
    label: str
    error: float                # relative L2 error of the outputs with only this layer in INT8


@dataclass
class GuardResult:
    ap_fp32: float
    ap_int8_all: float                          # every layer INT8
    ap_final: float
    limit: float                                # AP points
    kept_fp32: list[LayerSensitivity] = field(default_factory=list)
    ranking: list[LayerSensitivity] = field(default_factory=list)
    tried: list[tuple[int, float]] = field(default_factory=list)    # (layers kept in FP32, AP)

    @property
    def drop_points(self) -> float:
        return 100.0 * (self.ap_fp32 - self.ap_final)


def output_error(reference: list[tuple[np.ndarray, ...]], got: list[tuple[np.ndarray, ...]]) -> float:
    """Relative L2 error per output (``|got - ref| / |ref|`` over all images), averaged over the outputs."""
    errors = []
    for k in range(len(reference[0])):
        ref = np.concatenate([r[k].ravel() for r in reference]).astype(np.float64)
        out = np.concatenate([g[k].ravel() for g in got]).astype(np.float64)
        errors.append(float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12)))
    return float(np.mean(errors))


def rank_layers(names: list[str], labels: dict[str, str], error_with_only: Callable[[str], float],
                progress: Callable[[int], None] | None = None) -> list[LayerSensitivity]:
    """Every layer's sensitivity, most sensitive first."""
    ranking = []
    for name in names:
        ranking.append(LayerSensitivity(name, labels[name], error_with_only(name)))
        if progress:
            progress(1)
    return sorted(ranking, key=lambda s: -s.error)


def smallest_exclusion(ranking: list[LayerSensitivity], ap_with_fp32: Callable[[list[str]], float],
                       ap_fp32: float, limit_points: float,
                       tried: list[tuple[int, float]]) -> tuple[int, float]:
    """The fewest most-sensitive layers to keep in FP32 for an AP drop within ``limit_points``.

    ``k`` doubles (1, 2, 4...) until the drop is within the limit, then is
    bisected between the last ``k`` that failed and the first that passed.
    Each AP measured is appended to ``tried``. Returns ``(k, AP)``; with every
    layer in FP32 the drop is 0, so a ``k`` is always found.
    """
    def within(ap: float) -> bool:
        return 100.0 * (ap_fp32 - ap) <= limit_points + 1e-9

    measured: dict[int, float] = {}

    def ap_of(k: int) -> float:
        if k not in measured:
            measured[k] = ap_with_fp32([s.name for s in ranking[:k]])
            tried.append((k, measured[k]))
        return measured[k]

    n = len(ranking)
    failed, k = 0, 1
    while k < n and not within(ap_of(k)):
        failed, k = k, min(2 * k, n)
    if k >= n and not within(ap_of(n)):
        return n, ap_of(n)
    passed = k
    while passed - failed > 1:
        middle = (failed + passed) // 2
        if within(ap_of(middle)):
            passed = middle
        else:
            failed = middle
    return passed, ap_of(passed)
