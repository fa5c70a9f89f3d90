"""Top-down pose estimation, Simple Baselines style: person boxes -> crops -> heatmaps -> keypoints.

numpy and OpenCV only, like the rest of the runtime. A top-down model
(``ModelMeta.approach == "top-down"``, e.g. PoseResNet) sees one person per
input: each person box is widened to the model's aspect ratio, enlarged by
:data:`PADDING` and warped to the input size (:func:`crop_matrix`); the
model's ``[K, h, w]`` heatmaps are read back by argmax with a quarter-cell
step towards the higher neighbour (:func:`heatmaps_to_keypoints`) and mapped
into the image through the inverse warp.

Coordinates follow the published code (microsoft/human-pose-estimation.pytorch),
so its checkpoints read right: heatmap cell ``u`` is crop pixel ``stride * u``
(not the bottom-up decoder's pixel-centre convention), and the flip test
shifts the mirrored heatmaps one cell as its ``SHIFT_HEATMAP`` does.

Person scores are rescored as there: the box's score times the mean of the
keypoint scores above :data:`KEYPOINT_SCORE_THRESHOLD`; then OKS-based
non-maximum suppression (:func:`oks_nms`) drops duplicates.

Boxes come from a detector's results file (evaluation) or, at run time, from
a bottom-up model's poses (:func:`boxes_from_people`): rtpose has no
separate person detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rtpose.decoder import People
from rtpose.engine import Engine
from rtpose.estimate import mirror_input
from rtpose.model_meta import ModelMeta
from rtpose.preprocess import PAD_VALUE, network_input

TOP_DOWN = "top-down"
PADDING = 1.25                      # boxes are enlarged by this before cropping (Simple Baselines)
KEYPOINT_SCORE_THRESHOLD = 0.2      # keypoints above this count in the person score (in_vis_thre)
OKS_NMS_THRESHOLD = 0.9             # people overlapping more than this OKS are duplicates
BOX_MARGIN = 0.1                    # a box from keypoints grows by this fraction on each side


def crop_region(box: np.ndarray, aspect: float, padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(x, y)`` and size ``(w, h)`` of the region cropped for an ``x, y, w, h`` box.

    The box is widened or heightened to ``aspect`` (input width / height),
    then enlarged by ``padding``, about its centre.
    """
    x, y, w, h = (float(v) for v in box[:4])
    centre = np.array([x + 0.5 * w, y + 0.5 * h], dtype=np.float64)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return centre, np.array([w, h], dtype=np.float64) * padding


def crop_matrix(centre: np.ndarray, size: np.ndarray, out_w: int, out_h: int, rotation: float = 0.0) -> np.ndarray:
    """[2, 3] affine taking image pixels to crop pixels: the region's centre to the crop's centre,
    its width to ``out_w``, rotated by ``rotation`` degrees (counter-clockwise) about its centre."""
    scale = out_w / size[0]
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), rotation, scale)
    matrix[:, 2] += (out_w / 2 - centre[0], out_h / 2 - centre[1])
    return matrix


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def apply_affine(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``[..., 2]`` points through a [2, 3] affine."""
    xy = np.asarray(xy, dtype=np.float64)
    return (xy @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def warp_crop(image: np.ndarray, matrix: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    return cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)


def heatmaps_to_keypoints(heatmaps: np.ndarray, stride: int) -> np.ndarray:
    """``[N, K, h, w]`` heatmaps -> ``[N, K, 3]`` ``(x, y, score)`` in crop pixels.

    The argmax cell, moved a quarter cell towards the higher of its two
    neighbours in x and in y (inside the map); the score is the maximum.
    """
    n, k, h, w = heatmaps.shape
    if n == 0:
        return np.zeros((0, k, 3), np.float32)
    maps = heatmaps.reshape(n * k, h, w)
    v, u = np.divmod(maps.reshape(n * k, -1).argmax(axis=1), w)
    i = np.arange(n * k)
    right, left = maps[i, v, np.minimum(u + 1, w - 1)], maps[i, v, np.maximum(u - 1, 0)]
    down, up = maps[i, np.minimum(v + 1, h - 1), u], maps[i, np.maximum(v - 1, 0), u]
    x = u + 0.25 * np.sign(right - left) * ((u > 0) & (u < w - 1))
    y = v + 0.25 * np.sign(down - up) * ((v > 0) & (v < h - 1))
    return np.stack([x * stride, y * stride, maps[i, v, u]], axis=-1).reshape(n, k, 3).astype(np.float32)


def mirror_heatmaps(heatmaps: np.ndarray, flip_permutation) -> np.ndarray:
    """Heatmaps of mirrored crops, mirrored back: flipped in x, left/right swapped, shifted one cell right."""
    back = np.flip(heatmaps, axis=-1)[:, list(flip_permutation)]
    shifted = back.copy()
    shifted[..., 1:] = back[..., :-1]
    return shifted


def rescore(keypoints: np.ndarray, box_scores: np.ndarray) -> np.ndarray:
    """Box score times the mean of the keypoint scores above the threshold (0 if none is)."""
    scores = keypoints[..., 2]
    above = scores > KEYPOINT_SCORE_THRESHOLD
    mean = np.where(above.any(axis=1), (scores * above).sum(axis=1) / np.maximum(above.sum(axis=1), 1), 0.0)
    return (mean * box_scores).astype(np.float32)


def oks_nms(people: People, areas: np.ndarray, sigmas, threshold: float = OKS_NMS_THRESHOLD) -> np.ndarray:
    """Indices of the people kept, best first: each drops the rest whose OKS with it exceeds ``threshold``.

    ``areas``: each person's region area, the OKS scale (the mean of the two compared).
    """
    order = np.argsort(-people.scores, kind="stable")
    xy = people.keypoints[..., :2].astype(np.float64)
    var = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        d2 = ((xy[rest] - xy[i]) ** 2).sum(axis=-1)
        scale = (areas[rest] + areas[i])[:, None] / 2 + np.finfo(np.float64).eps
        oks = np.exp(-d2 / var / scale / 2).mean(axis=1)
        order = rest[oks <= threshold]
    return np.asarray(keep, dtype=np.int64)


def boxes_from_people(people: People, min_score: float = KEYPOINT_SCORE_THRESHOLD,
                      margin: float = BOX_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """``x, y, w, h`` boxes around each person's keypoints scoring above ``min_score``, grown by
    ``margin`` on each side (keypoints lie inside the body's outline), and the person scores.

    People with fewer than two such keypoints give no box.
    """
    boxes, scores = [], []
    for kps, score in zip(people.keypoints, people.scores):
        xy = kps[kps[:, 2] > min_score, :2]
        if len(xy) < 2:
            continue
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        w, h = x1 - x0, y1 - y0
        boxes.append([x0 - margin * w, y0 - margin * h, w * (1 + 2 * margin), h * (1 + 2 * margin)])
        scores.append(score)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)


@dataclass(frozen=True)
class Crops:
    images: np.ndarray     # [N, H, W, 3] BGR, the model's input size
    matrices: np.ndarray   # [N, 2, 3] image pixels -> crop pixels
    areas: np.ndarray      # [N] area of each cropped region, image pixels squared


class TopDown:
    """A top-down model over person boxes: crops each box, runs the engine in batches, reads heatmaps back.

    ``flip``: the flip test, heatmaps averaged with those of the mirrored crops.
    """

    def __init__(self, engine: Engine, flip: bool = False, batch: int = 16) -> None:
        if not is_top_down(engine.meta):
            raise ValueError(f"{engine.meta.architecture} is a {engine.meta.approach} model, not a top-down one")
        self.engine, self.meta, self.flip = engine, engine.meta, flip
        self.batch = min(batch, getattr(engine, "max_batch", None) or batch)

    def crops(self, image: np.ndarray, boxes: np.ndarray) -> Crops:
        """Each box's crop of ``image`` (BGR, the input size) and where it came from."""
        w, h = self.meta.input_width, self.meta.input_height
        regions = [crop_region(b, w / h) for b in boxes]
        matrices = np.array([crop_matrix(c, s, w, h) for c, s in regions]).reshape(-1, 2, 3)
        canvases = np.array([warp_crop(image, m, w, h) for m in matrices], np.uint8).reshape(-1, h, w, 3)
        areas = np.array([s[0] * s[1] for _, s in regions], np.float64)
        return Crops(canvases, matrices, areas)

    def inputs(self, canvases: np.ndarray) -> list[np.ndarray]:
        """The model's input batches for ``[N, H, W, 3]`` BGR crops, at most ``batch`` crops each."""
        return [network_input(canvases[i:i + self.batch], self.meta) for i in range(0, len(canvases), self.batch)]

    def heatmaps(self, canvases: np.ndarray) -> np.ndarray:
        """``[N, K, h, w]`` heatmaps of ``[N, H, W, 3]`` BGR crops, in batches (and mirrored, with ``flip``)."""
        out = []
        for batch in self.inputs(canvases):
            maps = self.engine.infer(batch)[0]
            if self.flip:
                mirrored = self.engine.infer(mirror_input(batch, self.meta))[0]
                maps = (maps + mirror_heatmaps(mirrored, self.meta.skeleton.flip_permutation)) / 2
            out.append(maps)
        k = self.meta.skeleton.num_keypoints
        return np.concatenate(out) if out else np.zeros((0, k, self.meta.map_height, self.meta.map_width), np.float32)

    def estimate(self, image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray) -> People:
        """People in image coordinates for ``x, y, w, h`` boxes, rescored and de-duplicated."""
        crops = self.crops(image, boxes)
        return self.read(self.heatmaps(crops.images), crops, box_scores)

    def read(self, heatmaps: np.ndarray, crops: Crops, box_scores: np.ndarray) -> People:
        """Keypoints of ``crops``' heatmaps in image coordinates; people rescored, then OKS-NMS."""
        keypoints = heatmaps_to_keypoints(heatmaps, self.meta.stride)
        for i, matrix in enumerate(crops.matrices):
            keypoints[i, :, :2] = apply_affine(invert(matrix), keypoints[i, :, :2])
        people = People(keypoints, rescore(keypoints, np.asarray(box_scores, np.float32)))
        keep = oks_nms(people, crops.areas, self.meta.skeleton.sigmas)
        return People(people.keypoints[keep], people.scores[keep])

    def close(self) -> None:
        self.engine.close()


def is_top_down(meta: ModelMeta) -> bool:
    return meta.approach == TOP_DOWN
