"""Bottom-up decoding: heatmaps and guiding offsets in, people out (numpy only).

The chain, each step a pure function over arrays so it can be tested alone:

    find_peaks -> regress_peaks -> connect_limbs -> assemble_people -> fill_missing -> score_people

``regress_peaks`` places each peak by the model's predicted refinements
around it; :func:`refine_peaks` (a parabola through the log-heatmap) does it
from the heatmap alone, for models without refinements.

Grouping follows SimplePose: for every limb ``(a, b)`` each peak of ``a``
guides, by its predicted offset, to where ``b`` of the same person should be
(and each ``b`` back to ``a``). Candidate connections are scored by peak
confidence and by how well both guides land, then accepted greedily, the
highest score first, into people.

Grouping leaves a keypoint missing where people overlap: a hidden knee
often has no peak of its own, only the peak of the knee in front, which
the other person already holds. :func:`fill_missing` follows each person's
own guides to such keypoints and takes the best peak there, weak or held by
another person. Peaks are found once, down to the lower of the heatmap and
fill thresholds; only those above the heatmap threshold are grouped.

Map coordinates put pixel centres on integers; :func:`input_to_map` and
:func:`map_to_input` are the one definition of that convention, used by the
trainer's target encoder too.

This chain is the reference. :func:`rtpose.fast_decoder.decode_outputs`
gives the same people faster, from dense maps or from peaks found in the
model's graph; the runtime calls that one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtpose.model_meta import DecoderConfig, ModelMeta
from rtpose.skeleton import Skeleton

_EPS = 1e-10
VOTE_FLOOR = 1e-10       # least total weight of a vote (a cell with no heat around it moves by 0)


def input_to_map(xy: np.ndarray, stride: int) -> np.ndarray:
    return (np.asarray(xy, dtype=np.float32) + 0.5) / stride - 0.5


def map_to_input(uv: np.ndarray, stride: int) -> np.ndarray:
    return (np.asarray(uv, dtype=np.float32) + 0.5) * stride - 0.5


@dataclass(frozen=True)
class Peaks:
    """Local maxima of all heatmaps, concatenated over keypoint types."""

    kind: np.ndarray   # [P] keypoint type
    cell: np.ndarray   # [P, 2] integer map cell (x, y)
    xy: np.ndarray     # [P, 2] sub-pixel map position (x, y)
    score: np.ndarray  # [P]

    def __len__(self) -> int:
        return len(self.kind)


@dataclass(frozen=True)
class People:
    """Decoded people: ``keypoints [N, K, 3]`` as ``(x, y, score)``; a missing keypoint has score 0."""

    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def map_xy(self, fn) -> "People":
        """Apply ``fn`` to the ``[N, K, 2]`` positions (missing keypoints stay at 0)."""
        kps = self.keypoints.copy()
        found = kps[..., 2] > 0
        kps[..., :2] = np.where(found[..., None], fn(kps[..., :2]), 0.0)
        return People(kps, self.scores)


def find_peaks(heatmaps: np.ndarray, threshold: float, top_k: int) -> Peaks:
    """3x3 local maxima above ``threshold``, at most ``top_k`` per keypoint type.

    Ties between neighbours are broken towards the upper-left cell, so a flat
    top gives one peak, not two.
    """
    k, h, w = heatmaps.shape
    padded = np.pad(heatmaps, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    is_peak = heatmaps > threshold
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            neighbour = padded[:, dy:dy + h, dx:dx + w]
            earlier = (dy, dx) < (1, 1)
            is_peak &= (heatmaps > neighbour) if earlier else (heatmaps >= neighbour)
    kinds, ys, xs = np.nonzero(is_peak)
    scores = heatmaps[kinds, ys, xs]
    keep = _top_k_per_kind(kinds, scores, top_k)
    cell = np.stack([xs[keep], ys[keep]], axis=1).astype(np.int64)
    return Peaks(kind=kinds[keep], cell=cell, xy=cell.astype(np.float32), score=scores[keep].astype(np.float32))


def _top_k_per_kind(kinds: np.ndarray, scores: np.ndarray, top_k: int) -> np.ndarray:
    order = np.lexsort((-scores, kinds))           # by kind, then best score first
    sorted_kinds = kinds[order]
    first = np.searchsorted(sorted_kinds, sorted_kinds, side="left")
    rank = np.arange(len(order)) - first
    return np.sort(order[rank < top_k])


def refine_peaks(heatmaps: np.ndarray, peaks: Peaks) -> Peaks:
    """Sub-pixel positions from a parabola through the log of each peak and its neighbours.

    Exact for a Gaussian peak, which is what the model is trained to produce.
    """
    if len(peaks) == 0:
        return peaks
    _, h, w = heatmaps.shape
    k, x, y = peaks.kind, peaks.cell[:, 0], peaks.cell[:, 1]
    logc = np.log(heatmaps[k, y, x] + _EPS)

    def shift(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        lp, ln = np.log(prev + _EPS), np.log(nxt + _EPS)
        curvature = lp - 2 * logc + ln
        safe = np.where(curvature < -1e-6, curvature, -1.0)
        return np.where(curvature < -1e-6, np.clip(0.5 * (lp - ln) / safe, -0.5, 0.5), 0.0)

    dx = shift(heatmaps[k, y, np.maximum(x - 1, 0)], heatmaps[k, y, np.minimum(x + 1, w - 1)])
    dy = shift(heatmaps[k, np.maximum(y - 1, 0), x], heatmaps[k, np.minimum(y + 1, h - 1), x])
    xy = peaks.cell.astype(np.float32) + np.stack([dx, dy], axis=1).astype(np.float32)
    return Peaks(kind=peaks.kind, cell=peaks.cell, xy=xy, score=peaks.score)


REFINEMENT_LIMIT = 1.5   # map pixels one cell's refinement may point away from it
VOTE_RADIUS = 0.9        # map pixels from a peak's cell within which a neighbour's vote counts
VOTE_STEPS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def regress_peaks(heatmaps: np.ndarray, refinements: np.ndarray, peaks: Peaks) -> Peaks:
    """Sub-pixel positions from the refinements predicted around each peak (``[2K, h, w]``).

    Each cell of a peak's 3x3 neighbourhood votes for where the keypoint is
    (the cell plus its refinement), weighted by its heatmap value squared.
    The peak's own cell always votes; a neighbour only where its vote lands
    within ``VOTE_RADIUS`` of the peak's cell. Cells are trained to point at
    a keypoint only within ``REFINEMENT_RADIUS`` of it (the trainer's
    encoder), so a neighbour beyond that points nowhere in particular, and
    its vote would pull the peak towards the neighbour. The mean of the votes
    is more precise than the peak cell's own refinement (benchmarks/README.md,
    "Placing and ranking people"). Cells outside the map do not vote.
    ``export.peak_graph.vote_at_peaks`` takes the same steps in the graph.
    """
    if len(peaks) == 0:
        return peaks
    _, height, width = heatmaps.shape
    area = height * width
    steps = np.array(VOTE_STEPS, np.int64)                                   # [9, 2]: dx, dy
    nx = peaks.cell[:, :1] + steps[:, 0]                                     # [N, 9]
    ny = peaks.cell[:, 1:] + steps[:, 1]
    inside = (nx >= 0) & (nx < width) & (ny >= 0) & (ny < height)
    cell = np.where(inside, ny * width + nx, 0)
    x_at = 2 * area * peaks.kind[:, None] + cell                             # flat index of the x refinement
    limit = REFINEMENT_LIMIT
    mx = np.clip(refinements.reshape(-1)[x_at], -limit, limit) + steps[:, 0].astype(np.float32)
    my = np.clip(refinements.reshape(-1)[x_at + area], -limit, limit) + steps[:, 1].astype(np.float32)
    own = (steps == 0).all(axis=1)
    votes = inside & (own | (mx * mx + my * my < np.float32(VOTE_RADIUS ** 2)))
    weight = np.where(votes, np.square(heatmaps.reshape(-1)[area * peaks.kind[:, None] + cell]), np.float32(0))
    total = np.maximum(weight.sum(axis=1), np.float32(VOTE_FLOOR))
    moves = np.stack([(weight * mx).sum(axis=1), (weight * my).sum(axis=1)], axis=1) / total[:, None]
    return Peaks(kind=peaks.kind, cell=peaks.cell, xy=peaks.cell.astype(np.float32) + moves, score=peaks.score)


def select_peaks(peaks: Peaks, keep: np.ndarray) -> Peaks:
    return Peaks(kind=peaks.kind[keep], cell=peaks.cell[keep], xy=peaks.xy[keep], score=peaks.score[keep])


def rank_by_type(kind: np.ndarray, num_types: int) -> tuple[np.ndarray, int]:
    """Each peak's place among the peaks of its type, and the most peaks of any type: where peaks
    go in a ``[K, T]`` table by type. ``kind`` must be sorted, as the peak finders give it."""
    counts = np.bincount(kind, minlength=num_types)
    return np.arange(len(kind)) - (np.cumsum(counts) - counts)[kind], int(counts.max(initial=0))


def reindex(assignment: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Peak indices into ``select_peaks(peaks, keep)`` -> into ``peaks``; -1 (missing) stays -1."""
    return np.where(assignment >= 0, keep[np.maximum(assignment, 0)], -1)


def connect_limbs(peaks: Peaks, offsets: np.ndarray, skeleton: Skeleton, offset_scale: float,
                  max_distance: float) -> np.ndarray:
    """Candidate connections ``[C, 3]`` as ``(peak_a, peak_b, score)``, for every limb.

    A pair is a candidate when the guide from ``a`` lands near ``b`` and the
    guide from ``b`` lands near ``a``: within ``max_distance`` map pixels plus
    a quarter of the limb's length, since long limbs have larger offset errors.
    """
    by_kind = [np.flatnonzero(peaks.kind == k) for k in range(skeleton.num_keypoints)]
    found = []
    for limb, (a, b) in enumerate(skeleton.limbs):
        ia, ib = by_kind[a], by_kind[b]
        if len(ia) == 0 or len(ib) == 0:
            continue
        guided_b = _guide(peaks, ia, offsets, 2 * limb, offset_scale)      # a -> b
        guided_a = _guide(peaks, ib, offsets, 2 * limb + 1, offset_scale)  # b -> a
        miss_b = np.linalg.norm(guided_b[:, None, :] - peaks.xy[ib][None, :, :], axis=2)
        miss_a = np.linalg.norm(peaks.xy[ia][:, None, :] - guided_a[None, :, :], axis=2)
        length = np.linalg.norm(guided_b - peaks.cell[ia], axis=1)
        tolerance = max_distance + 0.25 * length[:, None]
        miss = np.maximum(miss_a, miss_b)
        ok_a, ok_b = np.nonzero(miss <= tolerance)
        if len(ok_a) == 0:
            continue
        closeness = 1.0 - 0.5 * miss[ok_a, ok_b] / tolerance[ok_a, 0]
        confidence = 0.5 * (peaks.score[ia[ok_a]] + peaks.score[ib[ok_b]])
        found.append(np.stack([ia[ok_a], ib[ok_b], confidence * closeness], axis=1))
    if not found:
        return np.zeros((0, 3), dtype=np.float64)
    return np.concatenate(found).astype(np.float64)


def _guide(peaks: Peaks, idx: np.ndarray, offsets: np.ndarray, directed: int, offset_scale: float) -> np.ndarray:
    x, y = peaks.cell[idx, 0], peaks.cell[idx, 1]
    vec = offsets[2 * directed:2 * directed + 2, y, x].T * offset_scale
    return peaks.cell[idx].astype(np.float32) + vec


def assemble_people(peaks: Peaks, connections: np.ndarray, num_keypoints: int, min_keypoints: int) -> np.ndarray:
    """Greedy grouping, best connection first: ``[N, K]`` peak index per keypoint, -1 if none.

    A connection joins two peaks into one person when that fills an empty
    slot; it merges two partial people when they have no keypoint type in
    common. Anything else would give a person two of the same keypoint.
    """
    slots: list[np.ndarray] = []
    owner = np.full(len(peaks), -1, dtype=np.int64)
    for pa, pb, _ in connections[np.argsort(-connections[:, 2], kind="stable")]:
        pa, pb = int(pa), int(pb)
        ka, kb = peaks.kind[pa], peaks.kind[pb]
        oa, ob = owner[pa], owner[pb]
        if oa < 0 and ob < 0:
            person = np.full(num_keypoints, -1, dtype=np.int64)
            person[ka], person[kb] = pa, pb
            owner[pa] = owner[pb] = len(slots)
            slots.append(person)
        elif oa >= 0 and ob < 0:
            if slots[oa][kb] < 0:
                slots[oa][kb] = pb
                owner[pb] = oa
        elif ob >= 0 and oa < 0:
            if slots[ob][ka] < 0:
                slots[ob][ka] = pa
                owner[pa] = ob
        elif oa != ob and not np.any((slots[oa] >= 0) & (slots[ob] >= 0)):
            moved = slots[ob] >= 0
            slots[oa][moved] = slots[ob][moved]
            owner[slots[ob][moved]] = oa
            slots[ob][:] = -1
    if min_keypoints <= 1:
        for p in np.flatnonzero(owner < 0):
            person = np.full(num_keypoints, -1, dtype=np.int64)
            person[peaks.kind[p]] = p
            slots.append(person)
    people = [s for s in slots if np.count_nonzero(s >= 0) >= min_keypoints]
    return np.stack(people) if people else np.zeros((0, num_keypoints), dtype=np.int64)


def fill_missing(assignment: np.ndarray, peaks: Peaks, where: np.ndarray, offsets: np.ndarray,
                 skeleton: Skeleton, offset_scale: float, threshold: float, radius: float) -> np.ndarray:
    """``[N, K]`` peak indices with the keypoints grouping left missing filled in where a peak is found.

    From each keypoint a person has, its guiding offset along a limb to a
    missing type points where that keypoint should be. The best peak of the
    type scoring above ``threshold`` within ``radius`` map pixels of there fills
    it, even one another person holds; where two of the person's limbs lead
    to the same missing keypoint, the first in the skeleton's order does.
    Filled keypoints guide on in the next round, until a round fills
    nothing. ``offsets`` is a table ``[L, 2, X]`` read at each peak's
    ``where``, as in :mod:`rtpose.fast_decoder`; peaks are sorted by type.
    """
    filled = assignment.copy()
    if len(filled) == 0 or threshold >= 1.0:
        return filled
    k = skeleton.num_keypoints
    # The candidates, in [K, T] tables per type, padded with peaks at infinity.
    candidates = np.flatnonzero(peaks.score > threshold)
    kind = peaks.kind[candidates]
    rank, width = rank_by_type(kind, k)
    index = np.full((k, max(width, 1)), -1, np.int64)
    index[kind, rank] = candidates
    x, y = np.full(index.shape, np.inf, np.float32), np.full(index.shape, np.inf, np.float32)
    x[kind, rank], y[kind, rank] = peaks.xy[candidates, 0], peaks.xy[candidates, 1]
    score = np.full(index.shape, -np.inf, np.float32)
    score[kind, rank] = peaks.score[candidates]

    start, end = np.asarray(skeleton.directed_limbs, np.int64).reshape(-1, 2).T
    new = filled >= 0                       # keypoints that have not guided yet
    while True:
        person, limb = np.nonzero(new[:, start] & (filled[:, end] < 0))
        if len(person) == 0:
            return filled
        source, target = filled[person, start[limb]], end[limb]
        guided = peaks.cell[source].astype(np.float32) + offsets[limb, :, where[source]] * offset_scale
        dx = x[target] - guided[:, :1]                                      # [M, T]
        dy = y[target] - guided[:, 1:]
        np.multiply(dx, dx, out=dx)
        np.multiply(dy, dy, out=dy)
        np.add(dx, dy, out=dx)
        near = np.where(dx <= radius * radius, score[target], -np.inf)
        best = np.argmax(near, axis=1)
        hit = near[np.arange(len(best)), best] > -np.inf
        if not hit.any():
            return filled
        person, target, best = person[hit], target[hit], best[hit]
        _, first = np.unique(person * k + target, return_index=True)       # the first limb per keypoint
        person, target = person[first], target[first]
        filled[person, target] = index[target, best[first]]
        new[:] = False
        new[person, target] = True


def score_people(peaks: Peaks, assignment: np.ndarray, person_threshold: float, max_persons: int,
                 sigmas: np.ndarray, grouped: np.ndarray | None = None) -> People:
    """Keypoints and scores; a missing keypoint is (0, 0, 0).

    A person's confidence is the mean score of the keypoints grouping found
    (``grouped [N, K]``, by default all it has) times the fraction of the K
    types found to the power 1/4. The plain mean over all K types, missing
    ones as 0, ranks people cut by the image border or partly hidden too low
    (benchmarks/README.md, "Filling missing keypoints", for the power). Its
    score, which ranks people, is the confidence times the OKS its size lets
    it keep (:func:`size_factor`). People whose confidence reaches
    ``person_threshold`` come best first by score, copies dropped
    (:func:`drop_duplicates`), at most ``max_persons``: the threshold asks
    whether it is a person, the size only where it ranks, so a small
    person's score may be below the threshold (benchmarks/README.md,
    "Placing and ranking people").
    """
    n, k = assignment.shape
    keypoints = np.zeros((n, k, 3), dtype=np.float32)
    found = assignment >= 0
    idx = assignment[found]
    keypoints[found, :2] = peaks.xy[idx]
    keypoints[found, 2] = peaks.score[idx]
    grouped = found if grouped is None else grouped
    count = grouped.sum(axis=1)
    mean = np.where(grouped, keypoints[..., 2], 0).sum(axis=1) / np.maximum(count, 1)
    confidence = mean * (count / k) ** 0.25
    scores = (confidence * size_factor(keypoints[..., :2], found, sigmas)).astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    order = drop_duplicates(assignment, order[confidence[order] >= person_threshold])[:max_persons]
    return People(keypoints=keypoints[order], scores=scores[order])


LOCALISATION_ERROR = 0.25   # map pixels: about the median distance of a decoded keypoint from the truth


def size_factor(xy: np.ndarray, found: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """The OKS each person keeps if each of its keypoints is ``LOCALISATION_ERROR`` off, ``[N]``.

    OKS divides a keypoint's error by the person's size, and the decoder's
    error is about the same in map pixels whatever the size, so a small
    person is less likely to match than a large one with the same keypoint
    scores. The size is the area of the box around its keypoints (at least
    1 map pixel squared), the OKS COCO's: mean of exp(-e^2 / (2 area (2 sigma)^2)).
    Ranking by it adds 0.008 AP on the held-out set (benchmarks/README.md,
    "Placing and ranking people").
    """
    lowest = np.where(found[..., None], xy, np.inf).min(axis=1, initial=np.inf)
    highest = np.where(found[..., None], xy, -np.inf).max(axis=1, initial=-np.inf)
    area = np.maximum(np.prod(np.maximum(highest - lowest, 0), axis=1), 1.0)
    kept = np.exp(-LOCALISATION_ERROR ** 2 / (2 * area[:, None] * np.square(2 * np.asarray(sigmas))[None]))
    return np.where(found, kept, 0).sum(axis=1) / np.maximum(found.sum(axis=1), 1)


DUPLICATE_SHARE = 0.7   # of a person's keypoints that, held by one better-ranked person, make it a duplicate


def drop_duplicates(assignment: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``order`` (best first) without the people most of whose keypoints one better person already has.

    Grouping gives each peak to one person; filling lends them. A fragment
    of two keypoints (a knee and an ankle the model also saw on the other
    leg) fills the rest from the person it belongs to and becomes a copy of
    it: on a video of one person walking, 74 people in 45 frames. Dropping
    people who share ``DUPLICATE_SHARE`` of their keypoints with one better
    person leaves 45 (benchmarks/README.md, "Filling missing keypoints").
    """
    holders: dict[int, list[int]] = {}      # peak -> the kept people that have it
    rows = assignment.tolist()
    kept = []
    for i in order.tolist():
        mine = [p for p in rows[i] if p >= 0]
        shared: dict[int, int] = {}
        for p in mine:
            for j in holders.get(p, ()):
                shared[j] = shared.get(j, 0) + 1
        if shared and max(shared.values()) >= DUPLICATE_SHARE * len(mine):
            continue
        kept.append(i)
        for p in mine:
            holders.setdefault(p, []).append(i)
    return np.asarray(kept, dtype=np.int64)


def decode(heatmaps: np.ndarray, offsets: np.ndarray, refinements: np.ndarray | None, meta: ModelMeta,
           config: DecoderConfig | None = None) -> People:
    """One image's outputs ``[K, h, w]``, ``[2L, h, w]`` and ``[2K, h, w]`` (or None) -> people in input pixels."""
    config = config or meta.decoder
    skeleton = meta.skeleton
    if heatmaps.shape[0] != skeleton.num_keypoints or offsets.shape[0] != skeleton.num_offset_channels:
        raise ValueError(f"outputs {heatmaps.shape} / {offsets.shape} do not fit skeleton {skeleton.name}")
    peaks = find_peaks(heatmaps, min(config.heatmap_threshold, config.fill_threshold), config.top_k)
    peaks = refine_peaks(heatmaps, peaks) if refinements is None else regress_peaks(heatmaps, refinements, peaks)
    strong = np.flatnonzero(peaks.score > config.heatmap_threshold)    # the peaks grouping joins
    joined = select_peaks(peaks, strong)
    connections = connect_limbs(joined, offsets, skeleton, meta.offset_scale, config.max_offset_distance)
    grouped = reindex(assemble_people(joined, connections, skeleton.num_keypoints, config.min_keypoints), strong)
    where = peaks.cell[:, 1] * heatmaps.shape[2] + peaks.cell[:, 0]
    table = offsets.reshape(len(skeleton.directed_limbs), 2, -1)
    return fill_and_score(peaks, grouped, where, table, meta, config)


def fill_and_score(peaks: Peaks, grouped: np.ndarray, where: np.ndarray, offsets: np.ndarray, meta: ModelMeta,
                   config: DecoderConfig) -> People:
    """The chain's last steps, the same in both decoders: :func:`fill_missing` on the ``grouped``
    people (``offsets`` a table ``[L, 2, X]`` read at each peak's ``where``), then
    :func:`score_people`, in input pixels."""
    skeleton = meta.skeleton
    assignment = fill_missing(grouped, peaks, where, offsets, skeleton, meta.offset_scale, config.fill_threshold,
                              config.max_offset_distance)
    people = score_people(peaks, assignment, config.person_threshold, config.max_persons, skeleton.sigmas,
                          grouped >= 0)
    return people.map_xy(lambda uv: map_to_input(uv, meta.stride))

