"""COCO keypoint AP/AR through pycocotools, for any engine on any COCO-format set.

The people come from :func:`rtpose.estimate.estimate`, i.e. the very
preprocessing and decoder the runtime uses.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rtpose.decoder import People
from rtpose.engine import Engine
from rtpose.estimate import estimate
from rtpose.model_meta import DecoderConfig
from rtpose.skeleton import Skeleton
from trainer.annotations import DatasetError, KeypointSet

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
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(skeleton.sigmas, dtype=np.float64)
        ev.params.maxDets = [max_dets]
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.evaluate()
        ev.accumulate()
    stats = {name: _summarize(ev, name.startswith("AP"), iou, area) for name, iou, area in _STATS}
    return stats, _table(stats, max_dets)


def _summarize(ev: COCOeval, precision: bool, iou: float | None, area: str) -> float:
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
             max_dets: int = 20, progress: Callable[[int], None] | None = None, flip: bool = False) -> EvalResult:
    """Estimate poses on every image of ``kset`` with ``engine`` and score them against its annotations.

    ``flip``: the flip test, outputs averaged with the mirrored image's (see :func:`rtpose.estimate.estimate`).
    """
    if engine.meta.skeleton.keypoints != kset.skeleton.keypoints:
        raise DatasetError(f"model keypoints ({engine.meta.skeleton.name}) differ from the dataset's "
                           f"({kset.skeleton.name})")
    gt = load_coco_gt(kset)
    results: list[dict] = []
    for start in range(0, len(kset.images), batch_size):
        records = kset.images[start:start + batch_size]
        images = [_read_image(r.path) for r in records]
        for record, people in zip(records, estimate(engine, images, config, flip=flip)):
            results.extend(people_to_coco(record.image_id, people))
        if progress:
            progress(len(records))
    stats, table = coco_keypoint_eval(gt, results, kset.skeleton, max_dets)
    return EvalResult(stats, results, table)


def _read_image(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return image
