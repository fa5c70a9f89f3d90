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
# still give a peak and large people keep a sharp one. Half the synthetic
# people are small enough to get the least sigma; the config's
# ``heatmap_min_sigma`` sets it per run (benchmarks/README.md, "Heatmap sigma").
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


def person_sigma(area: float, stride: int, min_sigma: float = MIN_SIGMA) -> float:
    return float(np.clip(SIGMA_PER_SIZE * np.sqrt(max(area, 1.0)) / stride, min_sigma, MAX_SIGMA))


def encode(keypoints: np.ndarray, areas: np.ndarray, meta: ModelMeta,
           ignore: np.ndarray | None = None, min_sigma: float = MIN_SIGMA) -> Targets:
    """Encode people given in network-input pixels.

    ``keypoints`` is ``[N, K, 3]`` with COCO visibility (0 = not labelled);
    ``areas`` is ``[N]`` in input pixels squared; ``ignore`` is an optional
    ``[h, w]`` map-sized mask, true where the heatmap loss must be ignored;
    ``min_sigma`` is the least Gaussian sigma in map pixels.
    """
    skeleton = meta.skeleton
    h, w, k = meta.map_height, meta.map_width, skeleton.num_keypoints
    limbs = np.array(skeleton.directed_limbs, dtype=np.int64).reshape(-1, 2)
    heatmaps = np.zeros((k, h, w), dtype=np.float32)
    offsets = np.zeros((2 * len(limbs), h, w), dtype=np.float32)
    offset_mask = np.zeros((len(limbs), h, w), dtype=np.float32)
    refinements = np.zeros((2 * k, h, w), dtype=np.float32)
    refinement_mask = np.zeros((k, h, w), dtype=np.float32)

    people = np.asarray(keypoints, dtype=np.float32).reshape(-1, k, 3)
    labelled = people[:, :, 2] > 0                                    # [N, K]
    uv = input_to_map(people[:, :, :2], meta.stride)                   # [N, K, 2]
    sigmas = np.array([person_sigma(float(a), meta.stride, min_sigma) for a in np.asarray(areas, dtype=np.float32)])
    # One entry per (person, keypoint) and per (person, directed limb), in
    # person order: where two people's windows meet, the nearer source wins
    # and, at equal distance, the earlier person.
    person, kp = np.nonzero(labelled)
    _draw_gaussians(heatmaps, kp, uv[person, kp], sigmas[person])
    # A refinement is an offset from a cell to the keypoint itself.
    _draw_offsets(refinements, refinement_mask, kp, uv[person, kp], uv[person, kp],
                  np.full(len(kp), REFINEMENT_RADIUS), 1.0)
    person, limb = np.nonzero(labelled[:, limbs[:, 0]] & labelled[:, limbs[:, 1]])
    radii = np.maximum(2.0, 1.5 * sigmas[person])
    _draw_offsets(offsets, offset_mask, limb, uv[person, limbs[limb, 0]], uv[person, limbs[limb, 1]],
                  radii, meta.offset_scale)

    heatmap_mask = np.ones((h, w), dtype=np.float32)
    if ignore is not None:
        heatmap_mask[ignore.astype(bool)] = 0.0
    return Targets(heatmaps, heatmap_mask, offsets, offset_mask, refinements, refinement_mask)


def _window_cells(centers: np.ndarray, radii: np.ndarray, w: int, h: int):
    """Every map cell of each entry's square window ``[floor(c - r), ceil(c + r)]``, clipped to the map.

    Returns ``(entry, y, x, d2)``: the entry each cell belongs to, the cell and its squared
    distance to the entry's centre (float32, as the maps are).
    """
    centers = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
    r = np.asarray(radii, dtype=np.float32)[:, None]
    lo = np.maximum(np.floor(centers - r).astype(np.int64), 0)
    hi = np.minimum(np.ceil(centers + r).astype(np.int64) + 1, [w, h])
    size = int((hi - lo).max(initial=0))
    steps = np.arange(size)
    x = lo[:, 0, None, None] + steps[None, None, :]
    y = lo[:, 1, None, None] + steps[None, :, None]
    inside = (x < hi[:, 0, None, None]) & (y < hi[:, 1, None, None])
    entry, y, x = (np.broadcast_to(a, inside.shape)[inside]
                   for a in (np.arange(len(centers))[:, None, None], y, x))
    d2 = (x.astype(np.float32) - centers[entry, 0]) ** 2 + (y.astype(np.float32) - centers[entry, 1]) ** 2
    return entry, y, x, d2


def _draw_gaussians(heatmaps: np.ndarray, channels: np.ndarray, centers: np.ndarray, sigmas: np.ndarray) -> None:
    """Max-merge a Gaussian of ``sigmas[i]`` at ``centers[i]`` into ``heatmaps[channels[i]]`` (3 sigma windows)."""
    _, h, w = heatmaps.shape
    entry, y, x, d2 = _window_cells(centers, 3 * np.asarray(sigmas), w, h)
    two_var = (2 * np.asarray(sigmas) ** 2).astype(np.float32)
    np.maximum.at(heatmaps, (channels[entry], y, x), np.exp(-d2 / two_var[entry]))


def _draw_offsets(offsets: np.ndarray, mask: np.ndarray, channels: np.ndarray, src: np.ndarray, dst: np.ndarray,
                  radii: np.ndarray, scale: float) -> None:
    """Within ``radii[i]`` of ``src[i]``, the vector to ``dst[i]`` in channel pair ``channels[i]``.

    Where entries of one channel overlap, the nearer source wins (the earlier entry on a tie).
    """
    _, h, w = mask.shape
    entry, y, x, d2 = _window_cells(src, radii, w, h)
    near = d2 <= (np.asarray(radii) ** 2).astype(np.float32)[entry]
    entry, y, x, d2 = entry[near], y[near], x[near], d2[near]
    cell = (channels[entry] * h + y) * w + x
    order = np.lexsort((entry, d2, cell))              # by cell, then distance, then entry
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[order[1:]] != cell[order[:-1]]
    win = order[first]
    c, y, x, dst = channels[entry[win]], y[win], x[win], np.asarray(dst, dtype=np.float32).reshape(-1, 2)[entry[win]]
    mask[c, y, x] = 1.0
    offsets[2 * c, y, x] = (dst[:, 0] - x.astype(np.float32)) / np.float32(scale)
    offsets[2 * c + 1, y, x] = (dst[:, 1] - y.astype(np.float32)) / np.float32(scale)
