"""CrowdPose AP, AR and AP by crowd level, as the CrowdPose toolkit reports them.

The figures follow crowdposetools (github.com/Jeff-sjtu/CrowdPose,
``crowdpose-api/PythonAPI/crowdposetools/cocoeval.py``), computed with
pycocotools' own COCOeval so that no second copy of the COCO code lives here:

- AP, AP50, AP75, AR, AR50, AR75 over all images, at most ``max_dets`` (20)
  people per image, one area range only: CrowdPose has no per-size figures.
- AP_easy, AP_medium, AP_hard: AP@0.5:0.95 over the images of one crowd
  level, by the image's ``crowdIndex``: easy below 0.2, medium from 0.2 to
  below 0.8, hard from 0.8 up. These are the bounds the toolkit's
  ``summarize`` passes (``get_type_result(first=0.2, second=0.8)``), hence
  those of the published tables; 0.1 is sometimes quoted for easy. A level
  without images scores -1, as in the toolkit.
- OKS scale: CrowdPose annotations have no ``area``; the toolkit uses 0.53 x
  the area of the person's box, always. pycocotools reads ``area`` (and
  fails without it), so :func:`crowdpose_gt` writes that value there.
- Sigmas: the skeleton's; rtpose's CROWDPOSE sigmas are the toolkit's.
"""

from __future__ import annotations

import contextlib
import copy
import io

from pycocotools.coco import COCO

from rtpose.skeleton import Skeleton
from trainer.annotations import DatasetError
from trainer.evaluate import keypoint_cocoeval, summarize_cocoeval

CROWD_BOUNDS = (0.2, 0.8)
LEVELS = ("easy", "medium", "hard")
OKS_AREA_PER_BOX_AREA = 0.53
_ONE_AREA = {"all": [0.0, 1e5 ** 2]}      # CrowdPose has no per-size figures
# (name, IoU threshold or None for 0.50:0.95) over all images, in the toolkit's order.
_STATS = (("AP", None), ("AP50", 0.5), ("AP75", 0.75), ("AR", None), ("AR50", 0.5), ("AR75", 0.75))


def crowd_levels(gt: COCO, bounds: tuple[float, float] = CROWD_BOUNDS) -> dict[str, list[int]]:
    """Sorted image ids of each crowd level (easy, medium, hard) by the images' ``crowdIndex``."""
    first, second = bounds
    levels: dict[str, list[int]] = {name: [] for name in LEVELS}
    for image_id in sorted(gt.getImgIds()):
        index = gt.imgs[image_id].get("crowdIndex")
        if index is None:
            raise DatasetError(f"image {image_id} has no crowdIndex: crowd levels need a CrowdPose annotation file")
        levels["easy" if index < first else "medium" if index < second else "hard"].append(image_id)
    return levels


def crowdpose_gt(gt: COCO) -> COCO:
    """A copy of ``gt`` whose people have the toolkit's OKS area, 0.53 x their box's (any ``area`` replaced)."""
    dataset = copy.deepcopy(gt.dataset)
    for ann in dataset["annotations"]:
        box = ann.get("bbox")
        if not box or len(box) != 4:
            raise DatasetError(f"annotation {ann.get('id')} (image {ann.get('image_id')}) has no bbox")
        ann["area"] = OKS_AREA_PER_BOX_AREA * float(box[2]) * float(box[3])
    copied = COCO()
    copied.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        copied.createIndex()
    return copied


def crowdpose_keypoint_eval(gt: COCO, results: list[dict], skeleton: Skeleton, max_dets: int = 20,
                            bounds: tuple[float, float] = CROWD_BOUNDS) -> tuple[dict[str, float], str]:
    """AP, AP50, AP75, AR, AR50, AR75, AP_easy, AP_medium, AP_hard of COCO-format ``results``, and their table.

    ``gt`` is loaded from a CrowdPose json (it is not changed); a crowd level
    without images scores -1. A file whose images do not all have a
    ``crowdIndex`` (14 CrowdPose keypoints, but not CrowdPose's own
    annotations) gets no crowd levels.
    """
    gt = crowdpose_gt(gt)
    indexed = all("crowdIndex" in image for image in gt.imgs.values())
    levels = crowd_levels(gt, bounds) if indexed else {}
    if not results:
        stats = {name: 0.0 for name, _ in _STATS}
        stats.update({f"AP_{level}": 0.0 if ids else -1.0 for level, ids in levels.items()})
        return stats, crowdpose_table(stats, levels, max_dets)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(r) for r in results])            # loadRes writes into the dicts it gets
    everything = keypoint_cocoeval(gt, dt, skeleton, max_dets, sorted(gt.getImgIds()), _ONE_AREA)
    stats = {name: summarize_cocoeval(everything, name.startswith("AP"), iou) for name, iou in _STATS}
    for level, ids in levels.items():
        stats[f"AP_{level}"] = (summarize_cocoeval(keypoint_cocoeval(gt, dt, skeleton, max_dets, ids, _ONE_AREA),
                                                   True, None) if ids else -1.0)
    return stats, crowdpose_table(stats, levels, max_dets)


def crowdpose_table(stats: dict[str, float], levels: dict[str, list[int]], max_dets: int = 20) -> str:
    """The toolkit's summary lines, each crowd level with its number of images."""
    lines = []
    for name, iou in _STATS:
        title = "Average Precision  (AP)" if name.startswith("AP") else "Average Recall     (AR)"
        iou_text = "0.50:0.95" if iou is None else f"{iou:0.2f}     "
        lines.append(f" {title} @[ IoU={iou_text} | area={'all':>6s} | maxDets={max_dets:>3d} ] = {stats[name]:0.3f}")
    for level, ids in levels.items():
        count = f"({len(ids)} image{'s' * (len(ids) != 1)})" if ids else "(no images)"
        lines.append(f" Average Precision  (AP) @[ IoU=0.50:0.95 | type={level:>6s} | maxDets={max_dets:>3d} ] = "
                     f"{stats[f'AP_{level}']:0.3f}  {count}")
    return "\n".join(lines)
