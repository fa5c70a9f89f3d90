"""COCO keypoint AP/AR through pycocotools, for any engine on any COCO-format set.

The people come from :func:`rtpose.estimate.estimate` for bottom-up models
and from :class:`rtpose.topdown.TopDown` for top-down ones, i.e. the very
preprocessing and decoding the runtime uses. A top-down model needs person
boxes: a :data:`BoxSource` gives them per image, from the ground truth
(:func:`gt_boxes`), a detector's results file (:class:`DetectionBoxes`) or a
bottom-up model's poses (:class:`PoseBoxes`, what ``rtpose run`` does).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rtpose.decoder import People
from rtpose.engine import Engine
from rtpose.estimate import estimate, estimate_scales
from rtpose.model_meta import DecoderConfig
from rtpose.skeleton import CROWDPOSE, Skeleton
from rtpose.topdown import TopDown, boxes_from_people, is_top_down
from trainer.annotations import DatasetError, ImageRecord, KeypointSet

# Per image: x, y, w, h person boxes [N, 4] and their scores [N].
BoxSource = Callable[[ImageRecord, np.ndarray], tuple[np.ndarray, np.ndarray]]

# (name, IoU threshold or None for 0.50:0.95, area range) in pycocotools' order.
_STATS = (
    ("AP", None, "all"), ("AP50", 0.5, "all"), ("AP75", 0.75, "all"),
    ("AP_medium", None, "medium"), ("AP_large", None, "large"),
    ("AR", None, "all"), ("AR50", 0.5, "all"), ("AR75", 0.75, "all"),
    ("AR_medium", None, "medium"), ("AR_large", None, "large"),
)


@dataclass
class EvalResult:
    stats: dict[str, float]
    results: list[dict]
    table: str


def people_to_coco(image_id: int, people: People, category_id: int = 1) -> list[dict]:
    """COCO results entries; a missing keypoint is written as (0, 0, 0)."""
    return [{"image_id": int(image_id), "category_id": category_id,
             "keypoints": [round(float(v), 2) for v in kps.reshape(-1)],
             "score": round(float(score), 5)}
            for kps, score in zip(people.keypoints, people.scores)]


def coco_keypoint_eval(gt: COCO, results: list[dict], skeleton: Skeleton, max_dets: int = 20) -> tuple[dict, str]:
    """pycocotools keypoint evaluation; ``max_dets`` people per image (COCO's own is 20)."""
    if not results:
        stats = {name: 0.0 for name, _, _ in _STATS}
        return stats, _table(stats, max_dets)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
    ev = keypoint_cocoeval(gt, dt, skeleton, max_dets, sorted(gt.getImgIds()))
    stats = {name: summarize_cocoeval(ev, name.startswith("AP"), iou, area) for name, iou, area in _STATS}
    return stats, _table(stats, max_dets)


def keypoint_cocoeval(gt: COCO, dt: COCO, skeleton: Skeleton, max_dets: int, image_ids: list[int],
                      area_ranges: dict[str, list[float]] | None = None) -> COCOeval:
    """pycocotools' keypoint COCOeval over ``image_ids`` with the skeleton's sigmas, evaluated and accumulated.

    ``area_ranges``: label -> [min, max] in place of COCO's all/medium/large.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(skeleton.sigmas, dtype=np.float64)
        ev.params.maxDets = [max_dets]
        if area_ranges is not None:
            ev.params.areaRngLbl, ev.params.areaRng = list(area_ranges), list(area_ranges.values())
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
    return ev


def summarize_cocoeval(ev: COCOeval, precision: bool, iou: float | None, area: str = "all") -> float:
    """Mean precision (or recall) over the IoU thresholds, or at ``iou``, for one area range; -1 where nobody
    is annotated."""
    p = ev.params
    a = p.areaRngLbl.index(area)
    values = ev.eval["precision"][:, :, :, a, -1] if precision else ev.eval["recall"][:, :, a, -1]
    if iou is not None:
        values = values[np.flatnonzero(np.isclose(p.iouThrs, iou))]
    values = values[values > -1]
    return float(values.mean()) if values.size else -1.0


def _table(stats: dict[str, float], max_dets: int) -> str:
    lines = []
    for name, iou, area in _STATS:
        title = "Average Precision  (AP)" if name.startswith("AP") else "Average Recall     (AR)"
        iou_text = "0.50:0.95" if iou is None else f"{iou:0.2f}     "
        lines.append(f" {title} @[ IoU={iou_text} | area={area:>6s} | maxDets={max_dets:>3d} ] = {stats[name]:0.3f}")
    return "\n".join(lines)


def load_coco_gt(kset: KeypointSet) -> COCO:
    if not kset.is_coco_format:
        raise DatasetError(f"{kset.annotation_file}: COCO AP needs a COCO-format annotation file")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(kset.annotation_file))


def evaluate(engine: Engine, kset: KeypointSet, config: DecoderConfig | None = None, batch_size: int = 8,
             max_dets: int = 20, progress: Callable[[int], None] | None = None, flip: bool = False,
             boxes: BoxSource | None = None, scales: tuple[float, ...] | None = None) -> EvalResult:
    """Estimate poses on every image of ``kset`` with ``engine`` and score them against its annotations.

    ``flip``: the flip test, outputs averaged with the mirrored image's (see
    :func:`rtpose.estimate.estimate` and :func:`rtpose.topdown.mirror_heatmaps`).
    ``boxes``: where a top-down model's person boxes come from (required for one).
    ``scales``: multi-scale, input sizes relative to the model's (see :func:`engines_at_scales`).
    """
    gt = load_coco_gt(kset)
    results: list[dict] = []
    for records, people in estimate_set(engine, kset, config, batch_size, flip, boxes, scales):
        for record, found in zip(records, people):
            results.extend(people_to_coco(record.image_id, found))
        if progress:
            progress(len(records))
    if kset.skeleton.name == CROWDPOSE.name:
        # CrowdPose's own figures: AP by crowd level, its OKS areas (its files have none).
        from trainer.crowdpose import crowdpose_keypoint_eval   # it builds on this module's COCOeval helpers
        stats, table = crowdpose_keypoint_eval(gt, results, kset.skeleton, max_dets)
    else:
        stats, table = coco_keypoint_eval(gt, results, kset.skeleton, max_dets)
    return EvalResult(stats, results, table)


def estimate_set(engine: Engine, kset: KeypointSet, config: DecoderConfig | None = None, batch_size: int = 8,
                 flip: bool = False, boxes: BoxSource | None = None, scales: tuple[float, ...] | None = None):
    """People on every image of ``kset``, yielded in batches: (records, [People per record])."""
    if engine.meta.skeleton.keypoints != kset.skeleton.keypoints:
        raise DatasetError(f"model keypoints ({engine.meta.skeleton.name}) differ from the dataset's "
                           f"({kset.skeleton.name})")
    top_down = TopDown(engine, flip=flip) if is_top_down(engine.meta) else None
    if top_down and boxes is None:
        raise ValueError(f"{engine.meta.architecture} is a top-down model: it needs person boxes "
                         "(a detections file, the ground truth's boxes or a bottom-up person model)")
    if top_down and scales:
        raise ValueError("multi-scale is for bottom-up models; a top-down model sees one crop per person")
    engines = engines_at_scales(engine, scales) if scales else None
    for start in range(0, len(kset.images), batch_size):
        records = kset.images[start:start + batch_size]
        images = [_read_image(r.path) for r in records]
        if top_down:
            yield records, [top_down.estimate(image, *boxes(record, image)) for record, image in zip(records, images)]
        elif engines:
            yield records, estimate_scales(engines, images, config, flip=flip)
        else:
            yield records, estimate(engine, images, config, flip=flip)


def engines_at_scales(engine: Engine, scales: tuple[float, ...]) -> list[Engine]:
    """The model of a checkpoint engine at input sizes scaled by ``scales`` (to multiples of 32, at least 32).

    Only a checkpoint runs at any size: an exported file's input size is fixed.
    """
    model = getattr(engine, "model", None)
    if model is None:
        raise ValueError("multi-scale needs a checkpoint (.pt): an exported model's input size is fixed")
    from trainer.checkpoint import CheckpointEngine   # torch: here only (calib evaluates ONNX models without it)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {list(scales)}")
    meta = engine.meta
    return [CheckpointEngine(model, replace(meta, input_width=max(32, round(meta.input_width * s / 32) * 32),
                                            input_height=max(32, round(meta.input_height * s / 32) * 32)))
            for s in scales]


def gt_boxes(record: ImageRecord, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The annotated people's boxes, score 1 (Simple Baselines' ``use_gt_bbox``)."""
    return record.boxes, np.ones(len(record.boxes), np.float32)


class DetectionBoxes:
    """Person boxes from a detector's results file (COCO results format: image_id, category_id, bbox, score).

    Boxes scoring below ``min_score`` are left out; ``category_id`` must be
    ``category`` (1, COCO's person) where an entry has one.
    """

    def __init__(self, path: str | Path, min_score: float = 0.0, category: int = 1) -> None:
        path = Path(path)
        try:
            entries = json.loads(path.read_text())
        except FileNotFoundError:
            raise DatasetError(f"detections file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path} is not a JSON detections file ({type(exc).__name__})") from None
        if not isinstance(entries, list):
            raise DatasetError(f"{path}: expected a list of COCO detection results")
        self.by_image: dict[int, list[tuple[list[float], float]]] = {}
        try:
            for e in entries:
                if e.get("category_id", category) == category and float(e["score"]) >= min_score:
                    box = [float(v) for v in e["bbox"]]
                    if len(box) != 4:
                        raise ValueError(f"bbox {e['bbox']} is not x, y, w, h")
                    self.by_image.setdefault(int(e["image_id"]), []).append((box, float(e["score"])))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{path}: malformed detection ({type(exc).__name__}: {exc})") from None

    def __call__(self, record: ImageRecord, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = self.by_image.get(record.image_id, [])
        return (np.asarray([b for b, _ in found], np.float32).reshape(-1, 4),
                np.asarray([s for _, s in found], np.float32))


class PoseBoxes:
    """Person boxes from a bottom-up model's poses on the image, as ``rtpose run`` gets them.

    ``decoder``: the person model's decoder settings (default: those stored in it).
    """

    def __init__(self, engine: Engine, decoder: DecoderConfig | None = None) -> None:
        if is_top_down(engine.meta):
            raise ValueError(f"the person model must be bottom-up; {engine.meta.architecture} is top-down")
        self.engine, self.decoder = engine, decoder

    def __call__(self, record: ImageRecord, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return boxes_from_people(estimate(self.engine, [image], self.decoder)[0])


def _read_image(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return image
