"""MPII PCKh@0.5 per joint, as in the Simple Baselines table.

The computation follows Simple Baselines' ``MPIIDataset.evaluate``
(microsoft/human-pose-estimation.pytorch, lib/dataset/mpii.py): a joint is
correct when its distance to the ground truth is at most ``threshold`` times
the person's head size; only joints the ground truth has (``joints_vis``)
count; Head is ``head_top``; the other rows average left and right; Mean
weighs every joint by how often it is labelled and leaves pelvis and thorax
out (upper neck stays in).

Head size: MPII's own is 0.6 x the diagonal of the annotated head box
(``SC_BIAS = 0.6`` in the MPII evaluation code; Simple Baselines reads the
boxes from ``gt_valid.mat``). The released list files (``image, joints,
joints_vis, center, scale``), like the samples in ``../shared/data/mpii``,
have no head boxes, so :func:`head_sizes_from_joints` falls back to the
length of the head segment, upper neck to head top: the "head segment
length" with which Andriluka et al. define PCKh ("2D Human Pose Estimation:
New Benchmark and State of the Art Analysis", CVPR 2014). It is not the
official normaliser, so numbers from it are comparable with each other, not
with published tables; give head boxes for those (:func:`read_head_boxes`
reads ``gt_valid.mat`` or a JSON list, one box per person in list-file order).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rtpose.decoder import People
from rtpose.skeleton import MPII
from rtpose.topdown import is_top_down
from trainer.annotations import DatasetError, KeypointSet
from trainer.evaluate import estimate_set, gt_boxes

SC_BIAS = 0.6
ROWS = ("head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
_INDEX = {name: i for i, name in enumerate(MPII.keypoints)}
_ROW_JOINTS = {
    "head": ("head_top",),
    "shoulder": ("l_shoulder", "r_shoulder"), "elbow": ("l_elbow", "r_elbow"), "wrist": ("l_wrist", "r_wrist"),
    "hip": ("l_hip", "r_hip"), "knee": ("l_knee", "r_knee"), "ankle": ("l_ankle", "r_ankle"),
}
_NOT_IN_MEAN = (_INDEX["pelvis"], _INDEX["thorax"])


def head_sizes_from_boxes(head_boxes: np.ndarray) -> np.ndarray:
    """MPII's head size: 0.6 x the diagonal of ``[N, 4]`` head boxes ``x1, y1, x2, y2``."""
    boxes = np.asarray(head_boxes, dtype=np.float64).reshape(-1, 4)
    return SC_BIAS * np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=1)


def read_head_boxes(path: str | Path, count: int) -> np.ndarray:
    """``[count, 4]`` head boxes ``x1, y1, x2, y2``, one per person in list-file order.

    ``path``: MPII's ``gt_valid.mat`` as Simple Baselines reads it
    (``headboxes_src [2, 2, N]``: corner, x/y, person; needs scipy), or a
    ``.json`` list of ``[x1, y1, x2, y2]``. ``count``: the people in the
    annotation file. Every problem is a :class:`DatasetError` (a ValueError)
    with one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"head boxes file not found: {path}")
    if path.suffix.lower() == ".mat":
        boxes = _head_boxes_from_mat(path)
    elif path.suffix.lower() == ".json":
        boxes = _head_boxes_from_json(path)
    else:
        raise DatasetError(f"{path}: head boxes must be MPII's .mat (gt_valid.mat) or a .json list")
    if len(boxes) != count:
        raise DatasetError(f"{path}: {len(boxes)} head boxes for {count} annotated people")
    empty = np.flatnonzero(~(head_sizes_from_boxes(boxes) > 0))         # nan included
    if empty.size:
        raise DatasetError(f"{path}: the head box of person {empty[0]} (0-based, list-file order) has no size: "
                           f"{boxes[empty[0]].tolist()}")
    return boxes


def _head_boxes_from_mat(path: Path) -> np.ndarray:
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError:
        raise DatasetError(f"{path}: reading a .mat file needs scipy: pip install scipy") from None
    try:
        mat = loadmat(str(path))
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise DatasetError(f"{path}: not a readable MATLAB file ({_one_line(exc)})") from None
    if "headboxes_src" not in mat:
        raise DatasetError(f"{path}: no 'headboxes_src' array (MPII's gt_valid.mat has one)")
    try:
        src = np.asarray(mat["headboxes_src"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: headboxes_src is not numeric") from None
    if src.shape == (2, 2):               # MATLAB drops a trailing dimension of 1: one person
        src = src[..., None]
    if src.ndim != 3 or src.shape[:2] != (2, 2):
        raise DatasetError(f"{path}: headboxes_src has shape {src.shape}, expected (2, 2, N)")
    return np.concatenate([src[0].T, src[1].T], axis=1)


def _head_boxes_from_json(path: Path) -> np.ndarray:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {_one_line(exc)}") from None
    try:
        boxes = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        boxes = None
    if boxes is None or boxes.ndim != 2 or boxes.shape[1] != 4:
        got = "" if boxes is None else f" (got shape {boxes.shape})"
        raise DatasetError(f"{path}: expected a list of [x1, y1, x2, y2], one per person{got}")
    return boxes


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def head_sizes_per_image(kset: KeypointSet, head_boxes: np.ndarray) -> list[np.ndarray]:
    """MPII head sizes of each image's people from ``[people, 4]`` head boxes in list-file order.

    The loader groups a list file by image and keeps each person's position
    in the list (``ImageRecord.list_index``), so a list whose people of one
    image are not consecutive still gets the right box for each person.
    """
    people = sum(len(r.keypoints) for r in kset.images)
    if len(head_boxes) != people:
        raise DatasetError(f"{kset.annotation_file}: {len(head_boxes)} head boxes, {people} people evaluated")
    positions = np.concatenate([r.list_index for r in kset.images]) if kset.images else np.zeros(0, np.int64)
    if not np.array_equal(np.sort(positions), np.arange(people)):
        raise DatasetError(f"{kset.annotation_file}: head boxes go with the people of one MPII list file, "
                           "in its order")
    sizes = head_sizes_from_boxes(head_boxes)
    return [sizes[r.list_index] for r in kset.images]


def head_sizes_from_joints(joints: np.ndarray) -> np.ndarray:
    """Head segment length, upper neck to head top, of ``[N, 16, 2+]`` MPII joints (no head boxes)."""
    joints = np.asarray(joints, dtype=np.float64)
    return np.linalg.norm(joints[:, _INDEX["head_top"], :2] - joints[:, _INDEX["upper_neck"], :2], axis=1)


def pckh_per_joint(predicted: np.ndarray, ground_truth: np.ndarray, visible: np.ndarray,
                   head_sizes: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Percent correct per joint [16] and how many labelled joints each had [16].

    ``predicted`` and ``ground_truth`` are ``[N, 16, 2]`` pixels, ``visible``
    ``[N, 16]`` (true where the ground truth has the joint), ``head_sizes [N]``.
    A joint labelled nowhere scores nan.
    """
    predicted = np.asarray(predicted, dtype=np.float64)[..., :2]
    ground_truth = np.asarray(ground_truth, dtype=np.float64)[..., :2]
    visible = np.asarray(visible).astype(bool)
    error = np.linalg.norm(predicted - ground_truth, axis=2) / np.asarray(head_sizes, dtype=np.float64)[:, None]
    counts = visible.sum(axis=0)
    correct = ((error <= threshold) & visible).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * correct / counts, counts


def pckh_table(predicted: np.ndarray, ground_truth: np.ndarray, visible: np.ndarray, head_sizes: np.ndarray,
               threshold: float = 0.5) -> dict[str, float]:
    """Head, shoulder, elbow, wrist, hip, knee, ankle and mean PCKh, as Simple Baselines reports them."""
    per_joint, counts = pckh_per_joint(predicted, ground_truth, visible, head_sizes, threshold)
    table = {row: float(np.mean([per_joint[_INDEX[j]] for j in joints])) for row, joints in _ROW_JOINTS.items()}
    weights = counts.astype(np.float64)
    weights[list(_NOT_IN_MEAN)] = 0.0
    in_mean = weights > 0
    total = weights.sum()
    table["mean"] = float(np.sum(per_joint[in_mean] * weights[in_mean]) / total) if total else float("nan")
    return table


def format_pckh(table: dict[str, float]) -> str:
    names = [*ROWS, "mean"]
    return (" | ".join(f"{n.capitalize():>8s}" for n in names) + "\n"
            + " | ".join(f"{table[n]:8.1f}" for n in names))


def match_people(people: People, ground_truth: np.ndarray, visible: np.ndarray, head_sizes: np.ndarray,
                 threshold: float = 0.5) -> np.ndarray:
    """For each annotated person, the decoded person with most correct joints: ``[N, 16, 2]``.

    MPII annotates one or a few people per image while a bottom-up model
    finds everyone; each annotated person takes its best match. A joint the
    decoder did not find is placed at infinity, so it counts as wrong.
    """
    k = MPII.num_keypoints
    if len(people) == 0:
        return np.full((len(ground_truth), k, 2), np.inf)
    candidates = np.where(people.keypoints[..., 2:3] > 0, people.keypoints[..., :2].astype(np.float64), np.inf)
    matched = []
    for gt, vis, size in zip(ground_truth, visible, head_sizes):
        error = np.linalg.norm(candidates - gt[None, :, :2], axis=2) / size        # [P, 16]
        correct = ((error <= threshold) & vis[None]).sum(axis=1)
        mean_error = np.where(vis[None] & np.isfinite(error), error, 0.0).sum(axis=1)
        best = np.lexsort((mean_error, -correct))[0]
        matched.append(candidates[best])
    return np.asarray(matched).reshape(-1, k, 2)


def evaluate_pckh(engine, kset, config=None, threshold: float = 0.5, flip: bool = False,
                  head_boxes: np.ndarray | None = None) -> dict[str, float]:
    """PCKh of ``engine`` on an MPII :class:`KeypointSet`.

    Head sizes: MPII's from ``head_boxes`` (``[people, 4]`` in list-file
    order, see :func:`read_head_boxes`) when given, else the head segment
    (see above). A top-down model crops the annotated people (their
    ``center``/``scale``), as Simple Baselines' MPII figures do.
    """
    if kset.skeleton != MPII:
        raise ValueError(f"PCKh needs MPII keypoints, {kset.annotation_file} has {kset.skeleton.name}")
    if head_boxes is None:
        sizes_by_image = [head_sizes_from_joints(r.keypoints) for r in kset.images]
    else:
        sizes_by_image = head_sizes_per_image(kset, head_boxes)
    predicted, ground_truth, visible, sizes = [], [], [], []
    boxes = gt_boxes if is_top_down(engine.meta) else None
    found = (people for _, batch in estimate_set(engine, kset, config, 1, flip, boxes) for people in batch)
    for record, size, people in zip(kset.images, sizes_by_image, found):
        vis = record.keypoints[..., 2] > 0
        predicted.append(match_people(people, record.keypoints[..., :2], vis, size, threshold))
        ground_truth.append(record.keypoints[..., :2])
        visible.append(vis)
        sizes.append(size)
    return pckh_table(np.concatenate(predicted), np.concatenate(ground_truth), np.concatenate(visible),
                      np.concatenate(sizes), threshold)
