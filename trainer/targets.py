"""Target encoder: annotated people -> heatmaps, guiding offsets and their masks (numpy).

The inverse of :func:`rtpose.decoder.decode`; a test checks that decoding
encoded targets gives the annotations back (COCO AP >= 0.95).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtpose.decoder import input_to_map
from rtpose.model_meta import ModelMeta

# Gaussian sigma of a person's keypoints, in map pixels, as a fraction of the
# square root of the person's area (input pixels), clipped so small people
# still give a peak and large people keep a sharp one.
SIGMA_PER_SIZE = 0.07
MIN_SIGMA, MAX_SIGMA = 0.9, 2.0
REFINEMENT_RADIUS = 1.5   # map pixels around a keypoint where its refinement is supervised


@dataclass(frozen=True)
class Targets:
    heatmaps: np.ndarray       # [K, h, w] Gaussian peaks, max-merged over people
    heatmap_mask: np.ndarray   # [h, w] 0 where the loss must ignore the heatmaps (crowds)
    offsets: np.ndarray        # [2D, h, w] (dx, dy) per directed limb, / offset_scale
    offset_mask: np.ndarray    # [D, h, w] 1 where the offset of that limb is supervised
    refinements: np.ndarray    # [2K, h, w] (dx, dy) from a cell to the keypoint near it, map pixels
    refinement_mask: np.ndarray  # [K, h, w]


def person_sigma(area: float, stride: int) -> float:
    return float(np.clip(SIGMA_PER_SIZE * np.sqrt(max(area, 1.0)) / stride, MIN_SIGMA, MAX_SIGMA))


def encode(keypoints: np.ndarray, areas: np.ndarray, meta: ModelMeta,
           ignore: np.ndarray | None = None) -> Targets:
    """Encode people given in network-input pixels.

    ``keypoints`` is ``[N, K, 3]`` with COCO visibility (0 = not labelled);
    ``areas`` is ``[N]`` in input pixels squared; ``ignore`` is an optional
    ``[h, w]`` map-sized mask, true where the heatmap loss must be ignored.
    """
    skeleton = meta.skeleton
    h, w = meta.map_height, meta.map_width
    heatmaps = np.zeros((skeleton.num_keypoints, h, w), dtype=np.float32)
    limbs = skeleton.directed_limbs
    offsets = np.zeros((2 * len(limbs), h, w), dtype=np.float32)
    offset_mask = np.zeros((len(limbs), h, w), dtype=np.float32)
    nearest = np.full((len(limbs), h, w), np.inf, dtype=np.float32)
    refinements = np.zeros((2 * skeleton.num_keypoints, h, w), dtype=np.float32)
    refinement_mask = np.zeros((skeleton.num_keypoints, h, w), dtype=np.float32)
    nearest_keypoint = np.full((skeleton.num_keypoints, h, w), np.inf, dtype=np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)

    for person, area in zip(np.asarray(keypoints, dtype=np.float32), np.asarray(areas, dtype=np.float32)):
        labelled = person[:, 2] > 0
        uv = input_to_map(person[:, :2], meta.stride)
        sigma = person_sigma(float(area), meta.stride)
        for k in np.flatnonzero(labelled):
            _draw_gaussian(heatmaps[k], xs, ys, uv[k], sigma)
            # A refinement is an offset from a cell to the keypoint itself.
            _draw_offset(refinements[2 * k:2 * k + 2], refinement_mask[k], nearest_keypoint[k], xs, ys,
                         uv[k], uv[k], REFINEMENT_RADIUS, 1.0)
        radius = max(2.0, 1.5 * sigma)
        for d, (a, b) in enumerate(limbs):
            if labelled[a] and labelled[b]:
                _draw_offset(offsets[2 * d:2 * d + 2], offset_mask[d], nearest[d], xs, ys,
                             uv[a], uv[b], radius, meta.offset_scale)

    heatmap_mask = np.ones((h, w), dtype=np.float32)
    if ignore is not None:
        heatmap_mask[ignore.astype(bool)] = 0.0
    return Targets(heatmaps, heatmap_mask, offsets, offset_mask, refinements, refinement_mask)


def _window(center: np.ndarray, radius: float, w: int, h: int) -> tuple[slice, slice] | None:
    x0, x1 = int(np.floor(center[0] - radius)), int(np.ceil(center[0] + radius)) + 1
    y0, y1 = int(np.floor(center[1] - radius)), int(np.ceil(center[1] + radius)) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _draw_gaussian(heatmap: np.ndarray, xs: np.ndarray, ys: np.ndarray, center: np.ndarray, sigma: float) -> None:
    win = _window(center, 3 * sigma, heatmap.shape[1], heatmap.shape[0])
    if win is None:
        return
    d2 = (xs[win] - center[0]) ** 2 + (ys[win] - center[1]) ** 2
    np.maximum(heatmap[win], np.exp(-d2 / (2 * sigma * sigma)), out=heatmap[win])


def _draw_offset(offset: np.ndarray, mask: np.ndarray, nearest: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                 src: np.ndarray, dst: np.ndarray, radius: float, scale: float) -> None:
    """Around ``src``, the vector to ``dst``; where people overlap the nearer source wins."""
    win = _window(src, radius, mask.shape[1], mask.shape[0])
    if win is None:
        return
    d2 = (xs[win] - src[0]) ** 2 + (ys[win] - src[1]) ** 2
    take = (d2 <= radius * radius) & (d2 < nearest[win])
    nearest[win][take] = d2[take]
    mask[win][take] = 1.0
    offset[0][win][take] = (dst[0] - xs[win][take]) / scale
    offset[1][win][take] = (dst[1] - ys[win][take]) / scale
