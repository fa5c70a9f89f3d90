"""The decoder's fast path: the same people as :func:`rtpose.decoder.decode`, without its Python loops.

:func:`decode_outputs` takes one image's outputs, whatever the model has:

- dense maps (``heatmaps``, ``offsets``, ``refinements``): peaks are found in
  numpy, by a separable 3x3 max filter over the whole map;
- peaks found in the graph (``peak_scores``, ``peak_cells``, ``peak_offsets``,
  ``peak_refinements``, see ``export/peak_graph.py``): nothing here grows
  with the map size.

The steps mirror the plain chain, each a function over arrays:

    peaks_from_maps -> regress_peaks | peaks_from_graph -> place_peaks
        -> candidate_connections
        -> group_people -> fill_missing -> score_people (both: fill_and_score)

Candidate connections of all limbs are scored in one vectorised pass with the
same float operations, in the same dtypes and the same order, as
:func:`rtpose.decoder.connect_limbs`, so the scores are bit-identical and the
greedy grouping meets the connections in the same order and gives the same
people. The grouping stays a loop (each step depends on the ones before) but
over plain Python ints, with a bit mask per person for its keypoint types.
The plain chain is the reference; ``tests/test_fast_decoder.py`` holds the two
to each other.

Peaks carry ``where``: the index along the last axis of the offset and
refinement tables they are read from, the cell ``y * w + x`` for dense maps
(reshaped to ``[L, 2, h*w]``), the top-k slot for in-graph peaks (``[L, 2, T]``).
"""

from __future__ import annotations

import numpy as np

from rtpose.decoder import (Peaks, People, _top_k_per_kind, fill_and_score, rank_by_type, refine_peaks, regress_peaks,
                            reindex, select_peaks)
from rtpose.model_meta import DecoderConfig, ModelMeta
from rtpose.skeleton import Skeleton

PEAK_OUTPUTS = ("peak_scores", "peak_cells", "peak_offsets", "peak_refinements")


def peaks_from_maps(heatmaps: np.ndarray, threshold: float, top_k: int) -> tuple[Peaks, np.ndarray]:
    """:func:`rtpose.decoder.find_peaks` by a separable 3x3 max filter; the same peaks in the same order.

    Returns the peaks and each one's cell ``y * w + x``.
    """
    k, h, w = heatmaps.shape
    # The 3x3 maximum as a row maximum, then a column maximum. The row pass
    # runs over the flat array (contiguous, several times faster than over
    # [..., 1:] slices) and then mends the first and last columns, where it
    # looked into the next or previous row.
    flat = heatmaps.ravel()
    rows = flat.copy()
    np.maximum(rows[1:], flat[:-1], out=rows[1:])
    np.maximum(rows[:-1], flat[1:], out=rows[:-1])
    rows = rows.reshape(k, h, w)
    np.maximum(heatmaps[..., 0], heatmaps[..., min(1, w - 1)], out=rows[..., 0])
    np.maximum(heatmaps[..., -1], heatmaps[..., max(w - 2, 0)], out=rows[..., -1])
    pooled = rows.copy()
    np.maximum(pooled[:, 1:], rows[:, :-1], out=pooled[:, 1:])
    np.maximum(pooled[:, :-1], rows[:, 1:], out=pooled[:, :-1])
    at = np.flatnonzero((heatmaps == pooled) & (heatmaps > threshold))
    value = flat[at]
    # A tie with an earlier neighbour (the row above, or the cell to the left)
    # goes to that neighbour, as in find_peaks.
    kind, rest = np.divmod(at, h * w)
    y, x = np.divmod(rest, w)
    above_max = np.where(y > 0, rows.ravel()[at - w], -np.inf)
    left = np.where(x > 0, flat[at - 1], -np.inf)
    keep = value > np.maximum(above_max, left)
    kind, x, y, value = kind[keep], x[keep], y[keep], value[keep]
    if len(kind) and np.bincount(kind).max() > top_k:
        keep = _best_per_kind(kind, value, top_k)
        kind, x, y, value = kind[keep], x[keep], y[keep], value[keep]
    cell = np.stack([x, y], axis=1)
    return Peaks(kind=kind, cell=cell, xy=cell.astype(np.float32), score=value.astype(np.float32)), y * w + x


def _best_per_kind(kind: np.ndarray, value: np.ndarray, top_k: int) -> np.ndarray:
    """The indices :func:`rtpose.decoder._top_k_per_kind` keeps, by one stable integer sort.

    Positive float32 values sort as their bit patterns do, so (type, best
    score first) is one int64 key; equal scores keep their order (raster
    order), as lexsort does in the reference.
    """
    if value.dtype != np.float32:
        return _top_k_per_kind(kind, value, top_k)
    key = (kind.astype(np.int64) << 32) | (0x7FFFFFFF - value.view(np.int32))
    order = np.argsort(key, kind="stable")
    counts = np.bincount(kind)
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.sort(order[rank < top_k])


def peaks_from_graph(scores: np.ndarray, cells: np.ndarray, threshold: float, top_k: int,
                     map_width: int) -> tuple[Peaks, np.ndarray]:
    """In-graph peaks ``[K, T]`` (best first) -> the peaks above ``threshold``, at most ``top_k`` per type.

    Returns the peaks in find_peaks' order (by type, then cell) and each one's slot in ``T``.
    """
    if top_k > scores.shape[1]:
        raise ValueError(f"top_k {top_k} is more than the {scores.shape[1]} peaks per keypoint type this model "
                         f"finds in its graph; ask for at most {scores.shape[1]}, or add peaks again with a "
                         f"larger --peak-top-k")
    kind, slot = np.nonzero(scores[:, :top_k] > threshold)
    cell = cells[kind, slot]
    # The grouping breaks ties between equal scores by peak order: keep find_peaks' order.
    order = np.argsort(kind * (cells.max(initial=0) + 1) + cell, kind="stable")
    kind, slot, cell = kind[order], slot[order], cell[order]
    xy = np.stack([cell % map_width, cell // map_width], axis=1)
    peaks = Peaks(kind=kind, cell=xy, xy=xy.astype(np.float32), score=scores[kind, slot].astype(np.float32))
    return peaks, slot


def place_peaks(peaks: Peaks, moves: np.ndarray) -> Peaks:
    """:func:`rtpose.decoder.regress_peaks` for in-graph peaks: the graph has voted their ``moves [P, 2]``."""
    return Peaks(kind=peaks.kind, cell=peaks.cell, xy=peaks.cell.astype(np.float32) + moves, score=peaks.score)


def candidate_connections(peaks: Peaks, where: np.ndarray, offsets: np.ndarray, skeleton: Skeleton,
                          offset_scale: float, max_distance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`rtpose.decoder.connect_limbs` for all limbs at once, on an offset table ``[L, 2, X]``.

    Returns ``(peak_a, peak_b, score)`` in connect_limbs' order. Peaks must be
    sorted by type, as both peak finders give them.
    """
    empty = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    if len(peaks) == 0:
        return empty
    # Peaks of each type in a row of a [K, T] table, padded with dummy peaks
    # at infinity, so that every limb's [T, T] pairs are one broadcast.
    rank, width = rank_by_type(peaks.kind, skeleton.num_keypoints)
    index = np.zeros((skeleton.num_keypoints, width), np.int64)
    index[peaks.kind, rank] = np.arange(len(peaks))
    xy = np.full((skeleton.num_keypoints, width, 2), np.inf, np.float32)
    xy[peaks.kind, rank] = peaks.xy
    limbs = np.asarray(skeleton.limbs, dtype=np.int64).reshape(-1, 2)
    ia, ib = index[limbs[:, 0]], index[limbs[:, 1]]                       # [L, T]
    directed = 2 * np.arange(len(limbs))[:, None]
    # The same operations, in the same dtypes, as connect_limbs and _guide, so
    # the scores are bit-identical and the grouping meets them in the same order.
    cell_a = np.take(peaks.cell, ia, axis=0)      # np.take: several times faster than [] for rows
    cell_b = np.take(peaks.cell, ib, axis=0)
    guided_b = cell_a.astype(np.float32) + offsets[directed, :, where[ia]] * offset_scale       # [L, T, 2]
    guided_a = cell_b.astype(np.float32) + offsets[directed + 1, :, where[ib]] * offset_scale
    length = guided_b - cell_a                                             # float64, as in connect_limbs
    length *= length
    tolerance = max_distance + 0.25 * np.sqrt(length[..., 0] + length[..., 1])            # [L, T]
    xy_a, xy_b = xy[limbs[:, 0]], xy[limbs[:, 1]]

    # A first cut over all [L, T, T] pairs on the guide a -> b, on squared
    # distances (float32, in place, no square roots), a little generous so
    # that it keeps every pair the exact test keeps.
    limit = (np.square(tolerance) * (1 + 1e-5)).astype(np.float32)[:, :, None]
    dx = np.ascontiguousarray(guided_b[..., 0])[:, :, None] - np.ascontiguousarray(xy_b[..., 0])[:, None, :]
    dy = np.ascontiguousarray(guided_b[..., 1])[:, :, None] - np.ascontiguousarray(xy_b[..., 1])[:, None, :]
    np.multiply(dx, dx, out=dx)
    np.multiply(dy, dy, out=dy)
    np.add(dx, dy, out=dx)
    limb, pair = np.divmod(np.flatnonzero(dx <= limit), width * width)
    at_a = limb * width + pair // width                                    # into [L * T]
    at_b = limb * width + pair % width

    # The exact test on the pairs left: both guides, as connect_limbs has them,
    # (guided_b - xy_b, xy_a - guided_a) side by side.
    a_side = np.take(np.concatenate([guided_b, xy_a], axis=2).reshape(-1, 4), at_a, axis=0)
    b_side = np.take(np.concatenate([xy_b, guided_a], axis=2).reshape(-1, 4), at_b, axis=0)
    d = a_side - b_side
    d *= d
    miss = np.sqrt(d[:, 0::2] + d[:, 1::2])                                # (miss_b, miss_a)
    miss = np.maximum(miss[:, 0], miss[:, 1])
    tolerance = tolerance.ravel()[at_a]
    ok = miss <= tolerance
    at_a, at_b, miss, tolerance = at_a[ok], at_b[ok], miss[ok], tolerance[ok]
    pa, pb = ia.ravel()[at_a], ib.ravel()[at_b]
    closeness = 1.0 - 0.5 * miss / tolerance
    confidence = 0.5 * (peaks.score[pa] + peaks.score[pb])
    return pa, pb, (confidence * closeness).astype(np.float64)


def group_people(kinds: np.ndarray, peak_a: np.ndarray, peak_b: np.ndarray, score: np.ndarray,
                 num_keypoints: int, min_keypoints: int) -> np.ndarray:
    """:func:`rtpose.decoder.assemble_people`: ``[N, K]`` peak index per keypoint, -1 if none.

    The same greedy rules, best connection first; a person's keypoint types
    are a bit mask, so "fills an empty slot" and "no type in common" are one
    integer operation each.
    """
    order = np.argsort(-score, kind="stable")
    kind = kinds.tolist()
    bit = [1 << k for k in kind]               # each peak's type as a bit of a person's mask
    owner = [-1] * len(kind)
    slots: list[list[int]] = []
    masks: list[int] = []
    for a, b in zip(peak_a[order].tolist(), peak_b[order].tolist()):
        oa, ob = owner[a], owner[b]
        if oa < 0:
            if ob < 0:
                person = [-1] * num_keypoints
                person[kind[a]], person[kind[b]] = a, b
                owner[a] = owner[b] = len(slots)
                slots.append(person)
                masks.append(bit[a] | bit[b])
            elif not masks[ob] & bit[a]:
                slots[ob][kind[a]] = a
                masks[ob] |= bit[a]
                owner[a] = ob
        elif ob < 0:
            if not masks[oa] & bit[b]:
                slots[oa][kind[b]] = b
                masks[oa] |= bit[b]
                owner[b] = oa
        elif oa != ob and not masks[oa] & masks[ob]:
            into = slots[oa]
            for k, p in enumerate(slots[ob]):
                if p >= 0:
                    into[k] = p
                    owner[p] = oa
            masks[oa] |= masks[ob]
            masks[ob] = 0
    people = [s for s, m in zip(slots, masks) if m.bit_count() >= min_keypoints]
    if min_keypoints <= 1:
        for p, o in enumerate(owner):
            if o < 0:
                person = [-1] * num_keypoints
                person[kind[p]] = p
                people.append(person)
    return np.array(people, dtype=np.int64).reshape(-1, num_keypoints)


def decode_outputs(outputs: tuple[np.ndarray, ...], meta: ModelMeta, config: DecoderConfig | None = None) -> People:
    """One image's outputs, in the order of ``meta.output_names`` -> people in input pixels.

    The same people as :func:`rtpose.decoder.decode`, for models with dense
    maps and for models with peaks in the graph.
    """
    config = config or meta.decoder
    skeleton = meta.skeleton
    named = dict(zip(meta.output_names, outputs))
    num_limbs = len(skeleton.directed_limbs)
    lowest = min(config.heatmap_threshold, config.fill_threshold)   # weaker peaks may only fill
    if PEAK_OUTPUTS[0] in named:
        scores, cells, offsets, refinements = (named[n] for n in PEAK_OUTPUTS)
        if scores.shape[0] != skeleton.num_keypoints or offsets.shape[0] != num_limbs:
            raise ValueError(f"peak outputs {scores.shape} / {offsets.shape} do not fit skeleton {skeleton.name}")
        peaks, where = peaks_from_graph(scores, cells, lowest, config.top_k, meta.map_width)
        peaks = place_peaks(peaks, refinements[peaks.kind, :, where])   # voted in the graph
    else:
        heatmaps, offsets = named["heatmaps"], named["offsets"]
        if heatmaps.shape[0] != skeleton.num_keypoints or offsets.shape[0] != skeleton.num_offset_channels:
            raise ValueError(f"outputs {heatmaps.shape} / {offsets.shape} do not fit skeleton {skeleton.name}")
        peaks, where = peaks_from_maps(heatmaps, lowest, config.top_k)
        offsets = offsets.reshape(num_limbs, 2, -1)
        refinements = named.get("refinements")
        if refinements is None:
            peaks = refine_peaks(heatmaps, peaks)
        else:
            peaks = regress_peaks(heatmaps, refinements, peaks)
    strong = np.flatnonzero(peaks.score > config.heatmap_threshold)
    peak_a, peak_b, score = candidate_connections(select_peaks(peaks, strong), where[strong], offsets, skeleton,
                                                  meta.offset_scale, config.max_offset_distance)
    grouped = group_people(peaks.kind[strong], peak_a, peak_b, score, skeleton.num_keypoints, config.min_keypoints)
    return fill_and_score(peaks, reindex(grouped, strong), where, offsets, meta, config)
