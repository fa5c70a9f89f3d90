"""How well poses are tracked, against ground truth with identities: CLEAR-MOT figures and keypoint jitter.

Ground truth comes from :mod:`rtpose.synthetic.video` (keypoints with COCO
visibility and a ``track_id`` per person per frame). A person counts in a
frame when at least ``min_visible`` of their keypoints are visible (v = 2): a
person hidden behind another is not expected to be found, and a pose found on
them is not a false one either.

:func:`clear_mot` matches tracked poses to the people in each frame as
CLEAR-MOT does (Bernardin and Stiefelhagen 2008), with OKS over the person's
visible keypoints as the similarity (PoseTrack, too, scores visible joints only):
last frame's pairs are kept while their OKS stays above the threshold, the
rest are paired greedily, the most similar first (with OKS, different
people's poses score about 0 against each other, so greedy gives the same
pairs as an optimal assignment here). An identity switch is a person paired
with another track id than the one they last had. MOTA = 1 - (misses + false
positives + switches) / people counted.

:func:`keypoint_jitter` is the mean length of the second difference of a
keypoint's track (``|p[t+1] - 2 p[t] + p[t-1]|``, pixels per frame squared),
over keypoints found in three consecutive frames of a pose paired with the
same person, beside the same figure for the ground truth at the same places:
real motion accelerates too, so the tracker's jitter is what exceeds the ground truth's.

:class:`NoisyDetector` turns ground truth into detections with noise,
lost keypoints, lost people and false people, to measure the tracker apart
from a detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtpose.decoder import People
from rtpose.tracking import greedy_match, oks


@dataclass(frozen=True)
class TruthFrame:
    keypoints: np.ndarray   # [G, K, 3] (x, y, COCO visibility)
    ids: np.ndarray         # [G] track ids
    areas: np.ndarray       # [G]
    counted: np.ndarray     # [G] bool: enough visible keypoints to be expected


def truth_frame(persons: list[dict], num_keypoints: int, min_visible: int = 5) -> TruthFrame:
    """From :func:`rtpose.synthetic.video.iter_video_frames`' persons of one frame."""
    keypoints = np.array([p["keypoints"] for p in persons], np.float64).reshape(-1, num_keypoints, 3)
    ids = np.array([p["track_id"] for p in persons], np.int64)
    areas = np.array([p["area"] for p in persons], np.float64)
    counted = (keypoints[..., 2] == 2).sum(-1) >= min_visible
    return TruthFrame(keypoints, ids, areas, counted)


@dataclass(frozen=True)
class TrackedFrame:
    keypoints: np.ndarray   # [H, K, 3] (x, y, score)
    ids: np.ndarray         # [H]


def clear_mot(truth: list[TruthFrame], tracked: list[TrackedFrame], sigmas, threshold: float = 0.5) -> dict:
    """CLEAR-MOT figures; ``pairs`` holds, per frame, the (tracked index, truth index) pairs."""
    last_hyp: dict[int, int] = {}           # person -> track id they were last paired with
    current: dict[int, int] = {}            # person -> track id paired in the previous frame
    frames_counted: dict[int, int] = {}
    frames_paired: dict[int, int] = {}
    paired_ids: set[int] = set()
    all_ids: set[int] = set()
    gt = misses = false_pos = switches = 0
    similarity_sum = 0.0
    pairs_per_frame = []
    for t, h in zip(truth, tracked):
        all_ids.update(h.ids.tolist())
        visible = t.keypoints.copy()
        visible[..., 2] = t.keypoints[..., 2] == 2
        sim = (oks(visible, t.areas, h.keypoints, sigmas) if len(t.ids) and len(h.ids)
               else np.zeros((len(h.ids), len(t.ids))))
        counted = np.flatnonzero(t.counted)
        hyp_index = {int(i): j for j, i in enumerate(h.ids)}
        pairs: list[tuple[int, int]] = []
        for g in counted:
            j = hyp_index.get(current.get(int(t.ids[g]), -1))
            if j is not None and sim[j, g] >= threshold:
                pairs.append((j, int(g)))
        used_h, used_g = {j for j, _ in pairs}, {g for _, g in pairs}
        free_h = np.array([j for j in range(len(h.ids)) if j not in used_h], np.int64)
        free_g = np.array([g for g in counted if g not in used_g], np.int64)
        if len(free_h) and len(free_g):
            r, c = greedy_match(sim[np.ix_(free_h, free_g)], threshold)
            pairs += [(int(free_h[a]), int(free_g[b])) for a, b in zip(r, c)]
        current = {}
        for j, g in pairs:
            person, track = int(t.ids[g]), int(h.ids[j])
            if person in last_hyp and last_hyp[person] != track:
                switches += 1
            last_hyp[person] = current[person] = track
            frames_paired[person] = frames_paired.get(person, 0) + 1
            paired_ids.add(track)
            similarity_sum += float(sim[j, g])
        for g in counted:
            frames_counted[int(t.ids[g])] = frames_counted.get(int(t.ids[g]), 0) + 1
        gt += len(counted)
        misses += len(counted) - len(pairs)
        # A pose on a person who does not count (mostly hidden) is neither paired nor false.
        paired_h = {j for j, _ in pairs}
        unpaired = [j for j in range(len(h.ids)) if j not in paired_h]
        ignored = np.flatnonzero(~t.counted)
        false_pos += sum(1 for j in unpaired if not (len(ignored) and sim[j, ignored].max() >= threshold))
        pairs_per_frame.append(pairs)
    covered = {p: frames_paired.get(p, 0) / n for p, n in frames_counted.items()}
    return {
        "frames": len(truth), "people_counted": gt, "pairs": sum(len(p) for p in pairs_per_frame),
        "misses": misses, "false_positives": false_pos, "id_switches": switches,
        "mota": 1 - (misses + false_pos + switches) / gt if gt else float("nan"),
        "motp_oks": similarity_sum / max(1, sum(len(p) for p in pairs_per_frame)),
        "identities": len(frames_counted),
        "mostly_tracked": sum(c >= 0.8 for c in covered.values()),
        "mostly_lost": sum(c < 0.2 for c in covered.values()),
        "track_ids": len(all_ids), "false_tracks": len(all_ids - paired_ids),
        "pairs_per_frame": pairs_per_frame,
    }


def keypoint_jitter(truth: list[TruthFrame], tracked: list[TrackedFrame], pairs_per_frame: list) -> dict:
    """Mean ``|second difference|`` of tracked and true keypoints (px), and mean keypoint error (px).

    Over each person's keypoints that were visible, paired with the same track
    id and found in three consecutive frames (the error: in one frame).
    """
    series: dict[tuple[int, int], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for f, (t, h, pairs) in enumerate(zip(truth, tracked, pairs_per_frame)):
        for j, g in pairs:
            series.setdefault((int(t.ids[g]), int(h.ids[j])), {})[f] = (h.keypoints[j], t.keypoints[g])
    tracked_acc, true_acc, errors = [], [], []
    for frames in series.values():
        for f, (hyp, true) in frames.items():
            ok = (hyp[:, 2] > 0) & (true[:, 2] == 2)
            errors.append(np.linalg.norm(hyp[ok, :2] - true[ok, :2], axis=-1))
            if f - 1 in frames and f + 1 in frames:
                (h0, t0), (h2, t2) = frames[f - 1], frames[f + 1]
                ok &= (h0[:, 2] > 0) & (h2[:, 2] > 0) & (t0[:, 2] == 2) & (t2[:, 2] == 2)
                tracked_acc.append(np.linalg.norm(h2[ok, :2] - 2 * hyp[ok, :2] + h0[ok, :2], axis=-1))
                true_acc.append(np.linalg.norm(t2[ok, :2] - 2 * true[ok, :2] + t0[ok, :2], axis=-1))
    tracked_acc = np.concatenate(tracked_acc) if tracked_acc else np.zeros(0)
    true_acc = np.concatenate(true_acc) if true_acc else np.zeros(0)
    errors = np.concatenate(errors) if errors else np.zeros(0)
    def mean(a: np.ndarray) -> float:
        return float(a.mean()) if len(a) else float("nan")
    return {"points": len(tracked_acc), "jitter_px": mean(tracked_acc), "truth_jitter_px": mean(true_acc),
            "error_px": mean(errors)}


@dataclass(frozen=True)
class DetectionNoise:
    """What a fair detector gets wrong, per frame; positions in person heights."""

    position: float = 0.015       # keypoint noise (standard deviation per axis, of the person's height)
    keypoint_drop: float = 0.1    # chance a visible keypoint is not found
    occluded_found: float = 0.3   # chance an occluded (v = 1) keypoint is found anyway, noisier
    person_drop: float = 0.04     # chance per frame a found person starts being missed...
    max_drop_frames: int = 4      # ...for 1 to this many frames
    false_people: float = 0.1     # spurious people (3-6 keypoints somewhere) per frame
    min_visible: int = 5          # people with fewer visible keypoints are not found


class NoisyDetector:
    """Ground truth in, :class:`People` out, with :class:`DetectionNoise`; deterministic by seed."""

    def __init__(self, num_keypoints: int, noise: DetectionNoise = DetectionNoise(), seed: int = 0,
                 size: tuple[int, int] = (640, 360)) -> None:
        self.k, self.noise, self.size = num_keypoints, noise, size
        self.rng = np.random.default_rng(seed)
        self.dropped: dict[int, int] = {}     # person -> frames still to miss

    def __call__(self, persons: list[dict]) -> People:
        n, rng = self.noise, self.rng
        found = []
        for p in persons:
            kps = np.asarray(p["keypoints"], np.float64).reshape(self.k, 3)
            if (kps[:, 2] == 2).sum() < n.min_visible:
                continue
            person = int(p["track_id"])
            if self.dropped.get(person, 0) > 0:
                self.dropped[person] -= 1
                continue
            if rng.random() < n.person_drop:
                self.dropped[person] = int(rng.integers(1, n.max_drop_frames + 1)) - 1
                continue
            height = float(p["bbox"][3])
            keep = np.where(kps[:, 2] == 2, rng.random(self.k) >= n.keypoint_drop,
                            (kps[:, 2] == 1) & (rng.random(self.k) < n.occluded_found))
            sd = np.where(kps[:, 2] == 2, n.position, 2 * n.position) * height
            out = np.zeros((self.k, 3))
            out[:, :2] = kps[:, :2] + rng.standard_normal((self.k, 2)) * sd[:, None]
            out[:, 2] = rng.uniform(0.3, 1.0, self.k)
            out[~keep] = 0
            found.append(out)
        if rng.random() < n.false_people:
            out = np.zeros((self.k, 3))
            chosen = rng.choice(self.k, int(rng.integers(3, 7)), replace=False)
            centre = rng.uniform(0, 1, 2) * self.size
            out[chosen, :2] = centre + rng.standard_normal((len(chosen), 2)) * 20
            out[chosen, 2] = rng.uniform(0.1, 0.4, len(chosen))
            found.append(out)
        keypoints = np.array(found, np.float32).reshape(-1, self.k, 3)
        return People(keypoints, keypoints[..., 2].mean(-1) if len(found) else np.zeros(0, np.float32))
