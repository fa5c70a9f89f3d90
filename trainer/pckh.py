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
with published tables; give head boxes for those.
"""

from __future__ import annotations

import numpy as np

from rtpose.decoder import People
from rtpose.estimate import estimate
from rtpose.skeleton import MPII
from trainer.evaluate import _read_image

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
    table["mean"] = float(np.sum(per_joint[in_mean] * weights[in_mean]) / weights.sum()) if weights.sum() else float("nan")
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


def evaluate_pckh(engine, kset, config=None, threshold: float = 0.5, flip: bool = False) -> dict[str, float]:
    """PCKh of ``engine`` on an MPII :class:`KeypointSet` (head sizes from the joints, see above)."""
    if kset.skeleton != MPII:
        raise ValueError(f"PCKh needs MPII keypoints, {kset.annotation_file} has {kset.skeleton.name}")
    predicted, ground_truth, visible, sizes = [], [], [], []
    for record in kset.images:
        people = estimate(engine, [_read_image(record.path)], config, flip=flip)[0]
        vis = record.keypoints[..., 2] > 0
        size = head_sizes_from_joints(record.keypoints)
        predicted.append(match_people(people, record.keypoints[..., :2], vis, size, threshold))
        ground_truth.append(record.keypoints[..., :2])
        visible.append(vis)
        sizes.append(size)
    return pckh_table(np.concatenate(predicted), np.concatenate(ground_truth), np.concatenate(visible),
                      np.concatenate(sizes), threshold)
