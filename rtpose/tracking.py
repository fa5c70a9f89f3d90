"""Pose tracking: one identity per person across the frames of a video, as Simple Baselines links poses.

Simple Baselines (Xiao, Wu and Wei, ECCV 2018) tracks by pose similarity:
the poses of the previous frame are moved to the present by optical flow,
and each new pose takes the identity of the moved pose it resembles most
(OKS, the COCO keypoint similarity), greedily, the most similar pair first.
Per frame of one source, in order (:meth:`PoseTracker.update`):

    predict (velocity; flow_frame + propagate) -> pose_similarity -> greedy_match
        -> box_iou + greedy_match for what is left -> new and ended tracks -> one_euro

- Prediction: each track's last pose moved by its velocity (the mean motion
  of its keypoints between its last poses, px/s) for the time since it was
  seen; and, for tracks seen in the previous frame, a second guess moved by
  ``cv2.calcOpticalFlowPyrLK`` on the grayscale frame shrunk to ``flow_width``
  pixels wide (320: people's keypoints move a few pixels a frame there; each
  keypoint that strays from its pose's median flow moves by the median). A
  track is scored by its better guess: the flow fails at occluding edges,
  the velocity when people turn or stop.
- Matching: OKS with the skeleton's sigmas (:func:`oks` is pycocotools'
  definition) counting the keypoints found in either pose
  (:func:`pose_similarity`), greedy, best pair first, down to ``min_oks``;
  poses and tracks left over are paired by the IoU of their keypoint boxes
  (a person seen from a new side, a pose cut to a few keypoints) down to ``min_iou``.
- Tracks: a track that finds no pose lives on, moving at its velocity, for up
  to ``max_missed`` frames (fewer for a track seen only a few times: most are
  false detections), so a person hidden by a passer-by gets their identity
  back; a pose that matches no track starts one with a new id.
- Smoothing: each track's keypoints go through a One-Euro filter
  (:mod:`rtpose.smoothing`) that moves with the person (at the track's
  velocity), so walking is not lagged and only jitter on the body is
  smoothed; new for a new track, and for a keypoint missing in the previous
  frame; a keypoint the pose lacks stays missing.

What it cannot do: tell two people apart by how they look. Someone hidden
for longer than ``max_missed`` frames comes back with a new id, and someone
who comes out from behind another where a third stands may take the third's.

Everything is numpy and OpenCV; the functions are pure and testable alone,
:class:`PoseTracker` holds the state of one source (tracks as arrays, one row each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from rtpose.decoder import People
from rtpose.skeleton import Skeleton
from rtpose.smoothing import OneEuroConfig, OneEuroState, one_euro

LIFE_PER_HIT = 5       # a track ends after at most this many missed frames per pose it has had (then max_missed)
AREA_FACTOR = 0.3       # a pose's area for OKS: this times the longer side of its keypoint box, squared
MIN_AREA = 32.0 ** 2    # px^2: the smallest area OKS takes for a track (a pose cut to two keypoints has ~0)


@dataclass(frozen=True)
class TrackerConfig:
    min_oks: float = 0.1          # lowest pose similarity for a pose to continue a track
    min_iou: float = 0.3          # lowest keypoint-box IoU for the pairs OKS left
    max_missed: int = 30          # frames a track may go without a pose before it ends (seen once: 5)
    flow: bool = True             # also guess where tracks seen in the previous frame are by optical flow
    velocity: bool = True         # move tracks by their velocity since last seen (else they stay there)
    flow_width: int = 320         # frames are shrunk to at most this width for the flow
    flow_window: int = 9          # Lucas-Kanade window, pixels of the shrunk frame (11: as good, 20% slower)
    flow_levels: int = 2          # pyramid levels above the shrunk frame
    flow_outlier: float = 0.05    # of a pose's height: a keypoint's flow may stray this far from its pose's
    flow_points: int = 8          # keypoints of each pose followed by the flow (its best); the rest move with them
    smoothing: OneEuroConfig | None = field(default_factory=OneEuroConfig)   # None: raw keypoints out

    def __post_init__(self) -> None:
        if not (0 <= self.min_oks <= 1 and 0 <= self.min_iou <= 1):
            raise ValueError("min_oks and min_iou must be in [0, 1]")
        if self.max_missed < 0 or self.flow_width < 16 or self.flow_window < 3 or self.flow_levels < 0:
            raise ValueError("bad tracker settings: max_missed >= 0, flow_width >= 16, flow_window >= 3")


# --- similarity


def keypoint_similarity(reference: np.ndarray, areas: np.ndarray, candidates: np.ndarray, sigmas) -> np.ndarray:
    """OKS's per-keypoint term ``exp(-d^2 / (2 area (2 sigma)^2))`` ``[..., K]``.

    ``reference [..., K, 3]``, ``areas [...]`` and ``candidates [..., K, 3]``
    broadcast against each other: ``reference[None]`` with ``candidates[:, None]``
    gives every pair, equal leading shapes give pairs already chosen.
    """
    variances = (2 * np.asarray(sigmas, np.float32)) ** 2
    cand, ref = np.asarray(candidates, np.float32), np.asarray(reference, np.float32)
    dx, dy = cand[..., 0] - ref[..., 0], cand[..., 1] - ref[..., 1]     # (a sum over a last axis of 2 is 10x slower)
    d2 = dx * dx + dy * dy
    e = d2 / variances / (np.asarray(areas, np.float32)[..., None] + np.spacing(np.float32(1))) / 2
    # exp(-50) is 2e-22, as good as 0 here; exp of more underflows to subnormal numbers, ten times slower.
    return np.exp(-np.minimum(e, 50.0))


def oks(reference: np.ndarray, areas: np.ndarray, candidates: np.ndarray, sigmas) -> np.ndarray:
    """Object keypoint similarity ``[N candidates, M references]``, as pycocotools' ``computeOks``.

    ``reference [M, K, 3]`` plays the ground truth: its keypoints with a third
    value above 0 count, ``areas [M]`` is its area. ``candidates [N, K, 3]``
    play the detections: all their keypoints are compared (a missing one, at
    (0, 0), scores about 0). A reference without keypoints scores 0 here (pycocotools
    then measures the distance to its box; a track always has keypoints).
    """
    reference, candidates = np.asarray(reference), np.asarray(candidates)
    visible = reference[None, :, :, 2] > 0
    count = visible.sum(-1)
    terms = keypoint_similarity(reference[None], np.asarray(areas)[None], candidates[:, None], sigmas)
    return np.where(count > 0, (terms * visible).sum(-1) / np.maximum(count, 1), 0.0)


def pose_similarity(reference: np.ndarray, areas: np.ndarray, candidates: np.ndarray, sigmas) -> np.ndarray:
    """What the tracker matches by: OKS counting the keypoints found in either pose (broadcast as
    :func:`keypoint_similarity`; ``reference[None], areas[None], candidates[:, None]`` gives ``[N, M]``).

    pycocotools counts the ground truth's keypoints only, which is right
    against a full annotation and wrong between two detections: a track of
    three keypoints lying on a bigger person (the weak model's fragments do)
    would score that person as well as the person's own 17-keypoint track,
    and take them. Here a keypoint only one of the two poses has counts as a
    miss. (Counting it as half a miss, which would let a person coming out
    from behind another back into their track sooner, gave more identity
    switches with the shipped model: benchmarks/README.md, "Tracking".)
    """
    found_ref = np.asarray(reference)[..., 2] > 0
    found_cand = np.asarray(candidates)[..., 2] > 0
    terms = keypoint_similarity(reference, areas, candidates, sigmas)
    return (terms * (found_ref & found_cand)).sum(-1) / np.maximum((found_ref | found_cand).sum(-1), 1)


def near_pairs(a: np.ndarray, b: np.ndarray, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` of boxes ``a [N, 4]``, ``b [M, 4]`` that touch once each ``b`` grows by ``margin`` of its
    longer side all round.

    Poses further apart than that share no keypoint within ``0.5 *`` their
    side, where even the loosest sigma's term is below 0.01 (the area being
    ``AREA_FACTOR`` side squared): their similarity is taken as 0 without
    computing it. In a crowd this leaves a few pairs per pose out of hundreds.
    """
    grow = margin * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    lo, hi = b[:, :2] - grow[:, None], b[:, 2:] + grow[:, None]
    touch = ((a[:, None, :2] <= hi[None]) & (a[:, None, 2:] >= lo[None])).all(-1)
    return np.nonzero(touch)


def pose_boxes(keypoints: np.ndarray) -> np.ndarray:
    """``[N, 4]`` boxes ``(x0, y0, x1, y1)`` around each pose's found keypoints (zeros for none)."""
    kps = np.asarray(keypoints, np.float64)
    found = kps[..., 2] > 0
    any_found = found.any(-1)
    x, y = kps[..., 0], kps[..., 1]
    boxes = np.stack([np.where(found, x, np.inf).min(-1), np.where(found, y, np.inf).min(-1),
                      np.where(found, x, -np.inf).max(-1), np.where(found, y, -np.inf).max(-1)], axis=-1)
    return np.where(any_found[:, None], boxes, 0.0)


def pose_areas(boxes: np.ndarray) -> np.ndarray:
    """The area OKS scales distances by, from keypoint boxes ``[N, 4]``: ``AREA_FACTOR * longer side ** 2``.

    COCO's area is the person's segmentation, about 0.3 of the height squared
    standing; the keypoint box's own area is far smaller for a person seen
    from the side (thin), which made OKS too strict: 42 identity switches
    against 32 on noisy ground truth (benchmarks/README.md, "Tracking").
    """
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return np.maximum(AREA_FACTOR * side ** 2, MIN_AREA)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of boxes ``a [N, 4]`` and ``b [M, 4]`` (0 where both are empty)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(similarity: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(rows, cols)``, the most similar first, each row and column used once, all >= ``threshold``.

    Simple Baselines' matching. Ties go to the lower index (a stable sort).
    """
    rows, cols = np.nonzero(similarity >= threshold)
    order = np.argsort(-similarity[rows, cols], kind="stable")
    used_r, used_c = set(), set()
    taken = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            taken.append((r, c))
    pairs = np.array(taken, np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


# --- optical flow


@dataclass(frozen=True)
class FlowFrame:
    """A frame as the flow sees it: grayscale, shrunk by ``scale`` (flow pixels per image pixel)."""

    gray: np.ndarray
    scale: float
    size: tuple[int, int]     # the original image's (width, height)


def flow_frame(image: np.ndarray, width: int = 320) -> FlowFrame:
    """Grayscale, then shrunk bilinearly to at most ``width`` pixels wide (converting first is 10x cheaper)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    h, w = gray.shape
    scale = min(1.0, width / w)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
    return FlowFrame(gray, scale, (w, h))


def propagate(previous: FlowFrame, current: FlowFrame, keypoints: np.ndarray, window: int = 9,
              levels: int = 2, outlier: float = 0.05, points: int = 17) -> np.ndarray:
    """``keypoints [T, K, 3]`` of the previous frame moved to the current one by Lucas-Kanade flow.

    Only found keypoints move. Each pose's keypoints move together, give or
    take ``outlier`` of the pose's height: a keypoint whose flow strays
    further from the median of its pose's (at an occluding edge the flow
    follows whatever passes in front), or that the flow lost, moves by that
    median instead. Only each pose's ``points`` best-scoring keypoints are
    followed (the cost is per point); the others move by the median too.
    On synthetic walkers (window 9, 8 points) the moved keypoints' mean error
    is 1.3 px at 15 FPS and 3.7 px at 5 FPS, against 2.1 and 6.7 px for each
    keypoint following its own flow, and 2.6 and 7.4 px for not moving them
    (benchmarks/README.md, "Tracking").
    """
    moved = np.array(keypoints, np.float32, copy=True)
    found = moved[..., 2] > 0
    if not found.any() or previous.size != current.size:
        return moved
    flowed = found
    if points < moved.shape[1]:      # each pose's best-scoring keypoints only
        best = np.argsort(-np.where(found, moved[..., 2], -1.0), axis=1, kind="stable")[:, :points]
        flowed = np.zeros_like(found)
        np.put_along_axis(flowed, best, True, axis=1)
        flowed &= found
    start = (moved[flowed][:, :2] * previous.scale).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03)
    new, status, _ = cv2.calcOpticalFlowPyrLK(previous.gray, current.gray, start, None, winSize=(window, window),
                                              maxLevel=levels, criteria=criteria)
    shift = np.full(moved.shape[:2] + (2,), np.nan, np.float32)
    shift[flowed] = np.where(status.reshape(-1, 1) > 0, new.reshape(-1, 2) / current.scale - moved[flowed][:, :2],
                             np.nan)
    tracked = ~np.isnan(shift[..., 0])
    median = _nan_median(shift)
    boxes = pose_boxes(moved)
    limit = outlier * np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0])
    stray = ~tracked | (np.linalg.norm(shift - median[:, None], axis=-1) > limit[:, None])
    shift = np.where(stray[..., None], median[:, None], shift)
    moved[..., :2] += np.where(found[..., None], shift, 0.0)
    return moved


def _nan_median(values: np.ndarray) -> np.ndarray:
    """Median over axis 1 of ``[T, K, D]`` ignoring NaN (0 where all are NaN); np.nanmedian is 10x slower."""
    ordered = np.sort(values, axis=1)                    # NaN sort last
    count = (~np.isnan(values)).sum(1)                   # [T, D]
    low = np.take_along_axis(ordered, np.maximum(count - 1, 0)[:, None] // 2, axis=1)[:, 0]
    high = np.take_along_axis(ordered, (count // 2)[:, None], axis=1)[:, 0]
    return np.where(count > 0, (low + np.where(count % 2, low, high)) / 2, 0.0)


# --- the tracker


class PoseTracker:
    """Identities, and smoothed keypoints, for the people of one source; call :meth:`update` in frame order."""

    def __init__(self, skeleton: Skeleton, config: TrackerConfig = TrackerConfig()) -> None:
        self.sigmas = np.asarray(skeleton.sigmas, np.float64)
        self.config = config
        self.num_keypoints = k = skeleton.num_keypoints
        self.next_id = 1
        # The tracks, one row each: id, the pose last matched and when, the
        # velocity (px/s) of its keypoints' mean, frames missed since, how
        # many poses it has had, and the One-Euro state of each keypoint.
        self.ids = np.zeros(0, np.int64)
        self.observed = np.zeros((0, k, 3), np.float32)
        self.seen_at = np.zeros(0, np.float64)
        self.velocity = np.zeros((0, 2), np.float64)
        self.missed = np.zeros(0, np.int64)
        self.hits = np.zeros(0, np.int64)
        self.filters = OneEuroState.empty((0, k))
        self.previous: FlowFrame | None = None
        self.last_time = np.nan        # timestamp of the previous update

    def predict(self, timestamp: float, current: FlowFrame | None = None) -> list[np.ndarray]:
        """Where each track's pose may be now: one or two hypotheses ``[T, K, 3]``.

        The first moves each pose by its track's velocity since it was last
        seen (``velocity`` on; else it stays). With ``current`` (flow on), the
        second moves the poses matched in the previous frame by optical flow
        instead, as Simple Baselines does. Each fails where the other holds:
        flow at an occluding edge (it follows whoever passes in front),
        velocity when a person turns or stops; a pose is matched to a track
        by the better of the two.
        """
        poses = self.observed.copy()
        if self.config.velocity:
            poses[..., :2] += (self.velocity * (timestamp - self.seen_at)[:, None])[:, None, :].astype(np.float32)
        hypotheses = [poses]
        if current is not None and self.previous is not None:
            last = self.missed == 0
            if last.any():
                flowed = poses.copy()
                flowed[last] = propagate(self.previous, current, self.observed[last], self.config.flow_window,
                                         self.config.flow_levels, self.config.flow_outlier, self.config.flow_points)
                hypotheses.append(flowed)
        found = self.observed[..., 2:] > 0
        return [np.where(found, h, 0.0).astype(np.float32) for h in hypotheses]

    def update(self, people: People, image: np.ndarray | None = None, timestamp: float = 0.0
               ) -> tuple[np.ndarray, People]:
        """Track ids ``[N]`` of ``people`` in this frame, and the people, smoothed if smoothing is on.

        ``image`` (BGR or gray) is needed for the flow; ``timestamp`` (seconds)
        for the velocities and the smoothing.
        """
        cfg = self.config
        current = flow_frame(image, cfg.flow_width) if cfg.flow and image is not None else None
        hypotheses = self.predict(timestamp, current)
        self.previous = current
        detections = np.asarray(people.keypoints, np.float32)
        n = len(detections)

        rows, cols = self._match(detections, hypotheses)
        moved = np.zeros((n, 2))       # how far each matched person has gone since, at their track's velocity
        moved[rows] = self.velocity[cols] * (timestamp - self.seen_at[cols])[:, None]
        self._observe(cols, detections[rows], timestamp)
        track_of = np.full(n, -1, np.int64)
        track_of[rows] = cols
        new = np.flatnonzero(track_of < 0)
        track_of[new] = len(self.ids) + np.arange(len(new))
        self._start(detections[new], timestamp)

        out = people
        if cfg.smoothing is not None and n:
            out = self._smooth(people, track_of, moved, timestamp)
        self.last_time = timestamp
        ids = self.ids[track_of]
        self._end(self.missed <= np.minimum(cfg.max_missed, LIFE_PER_HIT * self.hits))
        return ids, out

    def _match(self, detections: np.ndarray, hypotheses: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(detection rows, track rows): by pose similarity first, then by box IoU among what is left;
        each track scored by its better hypothesis, only against poses near it (:func:`near_pairs`)."""
        if not len(detections) or not len(self.ids):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        found = pose_boxes(detections)
        boxes = [pose_boxes(h) for h in hypotheses]
        hull = np.concatenate([np.min(boxes, axis=0)[:, :2], np.max(boxes, axis=0)[:, 2:]], axis=1)
        i, j = near_pairs(found, hull)
        pair_similarity = np.max([pose_similarity(h[j], pose_areas(b[j]), detections[i], self.sigmas)
                                  for h, b in zip(hypotheses, boxes)], axis=0)
        similarity = np.zeros((len(detections), len(self.ids)), np.float32)
        similarity[i, j] = pair_similarity
        rows, cols = greedy_match(similarity, self.config.min_oks)
        left_r = np.setdiff1d(np.arange(len(detections)), rows)
        left_c = np.setdiff1d(np.arange(len(self.ids)), cols)
        if len(left_r) and len(left_c):
            iou = np.max([box_iou(found[left_r], b[left_c]) for b in boxes], axis=0)
            r, c = greedy_match(iou, max(self.config.min_iou, 1e-9))
            rows, cols = np.concatenate([rows, left_r[r]]), np.concatenate([cols, left_c[c]])
        return rows, cols

    def _observe(self, tracks: np.ndarray, poses: np.ndarray, timestamp: float) -> None:
        """Matched tracks take their new poses; their velocity follows the mean motion of shared keypoints."""
        old = self.observed[tracks]
        shared = (old[..., 2] > 0) & (poses[..., 2] > 0)
        moved = ((poses[..., :2] - old[..., :2]) * shared[..., None]).sum(1) / np.maximum(shared.sum(1), 1)[:, None]
        dt = np.maximum(timestamp - self.seen_at[tracks], 1e-3)[:, None]
        measured = np.where(shared.any(1)[:, None], moved / dt, self.velocity[tracks])
        first = (self.hits[tracks] == 1)[:, None]
        self.velocity[tracks] = np.where(first, measured, 0.5 * self.velocity[tracks] + 0.5 * measured)
        self.observed[tracks] = poses
        self.seen_at[tracks] = timestamp
        self.hits[tracks] += 1
        self.missed += 1
        self.missed[tracks] = 0

    def _start(self, poses: np.ndarray, timestamp: float) -> None:
        n = len(poses)
        self.ids = np.concatenate([self.ids, self.next_id + np.arange(n, dtype=np.int64)])
        self.next_id += n
        self.observed = np.concatenate([self.observed, poses])
        self.seen_at = np.concatenate([self.seen_at, np.full(n, timestamp)])
        self.velocity = np.concatenate([self.velocity, np.zeros((n, 2))])
        self.missed = np.concatenate([self.missed, np.zeros(n, np.int64)])
        self.hits = np.concatenate([self.hits, np.ones(n, np.int64)])
        self.filters = _append_empty(self.filters, n)

    def _end(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        self.ids, self.observed, self.seen_at = self.ids[keep], self.observed[keep], self.seen_at[keep]
        self.velocity, self.missed, self.hits = self.velocity[keep], self.missed[keep], self.hits[keep]
        self.filters = self.filters.take(keep)

    def _smooth(self, people: People, track_of: np.ndarray, moved: np.ndarray, timestamp: float) -> People:
        """One-Euro over each pose's found keypoints, in the person's own frame of reference.

        The filter's last values first move with the person (``moved``: the
        track's velocity times the time since), so the filter sees how
        keypoints move on the body and a person walking across the frame is
        not smoothed into trailing behind. Filtering positions as they are, a
        walker's face trailed by a few pixels, which its tight OKS sigmas
        noticed: 7% more of the model's people went unpaired with the ground
        truth, against 1% here (benchmarks/README.md, "Tracking"). A keypoint not found in the
        previous frame, or whose track was missed, starts afresh: blending in
        where it was frames ago would drag it back.
        """
        keypoints = np.asarray(people.keypoints)
        found = keypoints[..., 2] > 0
        boxes = pose_boxes(keypoints)
        scale = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0])[:, None]   # person size, px
        state = self.filters.take(track_of)
        state = OneEuroState(state.value + moved[:, None], state.velocity, state.time)
        restart = state.time != self.last_time
        smoothed, state = one_euro(state, keypoints[..., :2], timestamp, found, scale, self.config.smoothing,
                                   restart)
        self.filters.value[track_of], self.filters.velocity[track_of] = state.value, state.velocity
        self.filters.time[track_of] = state.time
        out = keypoints.copy()
        out[..., :2] = np.where(found[..., None], smoothed, 0.0)
        return People(out, people.scores)


def _append_empty(state: OneEuroState, count: int) -> OneEuroState:
    if not count:
        return state
    extra = OneEuroState.empty((count, state.time.shape[1]))
    return OneEuroState(np.concatenate([state.value, extra.value]), np.concatenate([state.velocity, extra.velocity]),
                        np.concatenate([state.time, extra.time]))
