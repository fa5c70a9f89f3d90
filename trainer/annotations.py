"""Keypoint annotations from disk into one record format (json + numpy, no torch).

Reads COCO-format keypoint files (COCO, CrowdPose, the synthetic sets, any
COCO-format folder; the skeleton comes from the file's category) and MPII's
list format as released with Simple Baselines. Every problem with the files
is raised as :class:`DatasetError` with one line naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtpose.skeleton import MPII, Skeleton, skeleton_for_keypoints


class DatasetError(ValueError):
    pass


@dataclass
class ImageRecord:
    image_id: int
    path: Path
    width: int                 # 0 when the annotation file does not say
    height: int
    keypoints: np.ndarray      # [N, K, 3] x, y, visibility (0 = not labelled)
    areas: np.ndarray          # [N] pixels squared
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    # [M, 4] x, y, w, h of crowds and of people without keypoints: the heatmap
    # loss is masked there, since they are people the targets do not mark.
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    # [N, 4] x, y, w, h of each person (top-down crops); MPII's: from center and scale.
    list_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # [N] each person's position in an MPII list file (what MPII's head boxes are ordered by); empty for COCO.


@dataclass
class KeypointSet:
    skeleton: Skeleton
    images: list[ImageRecord]
    annotation_file: Path
    is_coco_format: bool

    def __len__(self) -> int:
        return len(self.images)


def load_keypoint_set(annotation_file: str | Path, image_root: str | Path | None = None,
                      check_images: bool = True) -> KeypointSet:
    """Load a COCO-format json or an MPII list json; images default to ``<json dir>/images``."""
    path = Path(annotation_file)
    data = _read_json(path)
    root = Path(image_root) if image_root is not None else path.parent / "images"
    if isinstance(data, list):
        kset = _from_mpii(data, path, root)
    elif isinstance(data, dict):
        kset = _from_coco(data, path, root)
    else:
        raise DatasetError(f"{path}: neither a COCO-format object nor an MPII list")
    if check_images:
        missing = [r.path for r in kset.images if not r.path.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} of {len(kset.images)} images listed in {path} are missing "
                               f"on disk (first: {missing[0]}); give the image folder with --images")
    return kset


def load_keypoint_sets(annotation_files, image_roots=None) -> KeypointSet:
    """Several annotation files used as one training set; they must share a skeleton.

    ``annotation_files`` and ``image_roots`` are each one path or a list (a
    root of None means ``<json dir>/images``).
    """
    files = [annotation_files] if isinstance(annotation_files, (str, Path)) else list(annotation_files)
    roots = image_roots if isinstance(image_roots, (list, tuple)) else [image_roots] * len(files)
    if len(roots) != len(files):
        raise DatasetError(f"{len(files)} annotation files but {len(roots)} image folders")
    sets = [load_keypoint_set(f, r) for f, r in zip(files, roots)]
    for other in sets[1:]:
        if other.skeleton != sets[0].skeleton:
            raise DatasetError(f"{other.annotation_file} has {other.skeleton.name} keypoints, "
                               f"{sets[0].annotation_file} has {sets[0].skeleton.name}")
    if len(sets) == 1:
        return sets[0]
    return KeypointSet(sets[0].skeleton, [r for s in sets for r in s.images], sets[0].annotation_file,
                       is_coco_format=all(s.is_coco_format for s in sets))


def _read_json(path: Path):
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None


def _from_coco(data: dict, path: Path, root: Path) -> KeypointSet:
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: not a COCO keypoints file (no '{key}' list)")
    persons = [c for c in data["categories"] if c.get("keypoints")]
    if not persons:
        raise DatasetError(f"{path}: no category with keypoints")
    try:
        skeleton = skeleton_for_keypoints(persons[0]["keypoints"])
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    category = persons[0]["id"]
    k = skeleton.num_keypoints

    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        if ann.get("category_id", category) == category:
            by_image.setdefault(ann.get("image_id"), []).append(ann)

    images = []
    try:
        for img in data["images"]:
            kps, areas, ignore, boxes = [], [], [], []
            for ann in by_image.get(img["id"], []):
                box = ann.get("bbox", [0, 0, 0, 0])
                if ann.get("iscrowd", 0) or ann.get("num_keypoints", 1) == 0 or not ann.get("keypoints"):
                    ignore.append(box)
                    continue
                kp = np.asarray(ann["keypoints"], dtype=np.float32).reshape(k, 3)
                kps.append(kp)
                boxes.append(box)
                areas.append(float(ann.get("area") or box[2] * box[3]))
            images.append(ImageRecord(
                image_id=int(img["id"]), path=root / img["file_name"],
                width=int(img.get("width", 0)), height=int(img.get("height", 0)),
                keypoints=np.asarray(kps, dtype=np.float32).reshape(-1, k, 3),
                areas=np.asarray(areas, dtype=np.float32),
                ignore_boxes=np.asarray(ignore, dtype=np.float32).reshape(-1, 4),
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed COCO entry ({type(exc).__name__}: {exc})") from None
    return KeypointSet(skeleton, images, path, is_coco_format=True)


def _from_mpii(data: list, path: Path, root: Path) -> KeypointSet:
    """MPII list format: ``{image, joints[16][2], joints_vis[16], center, scale}`` per person."""
    by_file: dict[str, list[tuple[int, dict]]] = {}     # image -> (position in the list, entry) per person
    try:
        for position, entry in enumerate(data):
            by_file.setdefault(entry["image"], []).append((position, entry))
        images = []
        for i, (name, entries) in enumerate(by_file.items()):
            kps, areas, boxes = [], [], []
            for _, e in entries:
                # MPII's coordinates are Matlab's, 1-based; pixels here are 0-based
                # (as Simple Baselines' lib/dataset/mpii.py converts them).
                joints = np.asarray(e["joints"], dtype=np.float32).reshape(MPII.num_keypoints, 2) - 1.0
                vis = np.asarray(e["joints_vis"], dtype=np.float32).reshape(MPII.num_keypoints, 1)
                kps.append(np.concatenate([joints * (vis > 0), 2 * (vis > 0)], axis=1))
                # MPII's scale is the person's height / 200 px; call the area a
                # box of that height and half its width, as COCO areas roughly are.
                height = 200.0 * float(e["scale"])
                areas.append(0.5 * height * height * 0.5)
                # Simple Baselines' MPII crop: a square of side 200 * scale about the
                # centre moved down by 15 * scale (the centre sits high, at the chest).
                cx, cy = np.asarray(e["center"], dtype=np.float32) - 1.0
                cy += 15.0 * float(e["scale"])
                boxes.append([cx - height / 2, cy - height / 2, height, height])
            images.append(ImageRecord(image_id=i + 1, path=root / name, width=0, height=0,
                                      keypoints=np.asarray(kps, dtype=np.float32),
                                      areas=np.asarray(areas, dtype=np.float32),
                                      boxes=np.asarray(boxes, dtype=np.float32),
                                      list_index=np.asarray([position for position, _ in entries], np.int64)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed MPII entry ({type(exc).__name__}: {exc})") from None
    return KeypointSet(MPII, images, path, is_coco_format=False)
