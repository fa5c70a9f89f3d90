"""Drawing people on frames: a skeleton per person in its own colour, and a stats overlay."""

from __future__ import annotations

import cv2
import numpy as np

from rtpose.decoder import People
from rtpose.skeleton import Skeleton

# Well separated hues (BGR), one per person, cycled.
PALETTE = [(0, 128, 255), (255, 128, 0), (0, 220, 0), (255, 0, 255), (0, 255, 255), (255, 255, 0),
           (128, 0, 255), (0, 0, 255), (255, 0, 0), (128, 255, 128), (0, 100, 128), (200, 200, 200)]


# Anti-aliased thick lines cost 4.5x as much (11.6 against 2.6 ms for 40
# skeletons on 768x576, one core): in a crowd that is more than inference.
LINE = cv2.LINE_8


def draw_people(image: np.ndarray, people: People, skeleton: Skeleton, min_score: float = 0.2,
                colours: list[int] | None = None) -> np.ndarray:
    """Draw in place: the skeleton's bones between keypoints both scoring ``min_score`` or more, then the keypoints.

    ``colours`` picks a palette index per person (a track id, say); by default
    the person's rank. Keypoints scoring 0.5 or more get a larger white centre.
    Each drawing call draws many segments (OpenCV draws a thick segment with
    round ends, so a zero-length one is a dot): a crowd costs a few calls per
    person, not one per limb and keypoint.
    """
    scale = max(1, round(max(image.shape[:2]) / 640))
    bones = np.asarray(skeleton.bones, dtype=np.int64)
    for i, keypoints in enumerate(people.keypoints):
        colour = PALETTE[(colours[i] if colours is not None else i) % len(PALETTE)]
        shown = keypoints[:, 2] >= min_score
        points = np.round(keypoints[:, :2]).astype(np.int32)
        both = shown[bones[:, 0]] & shown[bones[:, 1]]
        cv2.polylines(image, list(points[bones[both]]), False, colour, 2 * scale, LINE)
        dots = np.repeat(points[shown, None], 2, axis=1)
        sure = keypoints[shown, 2] >= 0.5
        cv2.polylines(image, list(dots), False, colour, 6 * scale, LINE)
        cv2.polylines(image, list(dots[~sure]), False, (255, 255, 255), 2 * scale, LINE)
        cv2.polylines(image, list(dots[sure]), False, (255, 255, 255), 4 * scale, LINE)
    return image


def draw_track_ids(image: np.ndarray, people: People, ids, min_score: float = 0.2) -> np.ndarray:
    """Each person's track id above their highest shown keypoint, in the person's colour on a dark outline.

    About 0.3 ms for 40 people on 768x576 (one core): positions in numpy, one
    text size for all (the digits are equally wide), 8-connected strokes.
    """
    if not len(people):
        return image
    scale = max(0.4, max(image.shape[:2]) / 1400)
    (digit, height), _ = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    kps = people.keypoints
    shown = kps[..., 2] >= min_score
    count = shown.sum(1)
    x = (kps[..., 0] * shown).sum(1) / np.maximum(count, 1)
    top = np.where(shown, kps[..., 1], np.inf).min(1)
    for i in np.flatnonzero(count):
        text = str(int(ids[i]))
        origin = (int(x[i]) - digit * len(text) // 2, max(int(top[i]) - height, height + 2))
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, LINE)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, PALETTE[int(ids[i]) % len(PALETTE)], 1,
                    LINE)
    return image


def draw_overlay(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """Text in the top-left corner on a dark band, so it reads on any background."""
    scale = max(0.4, max(image.shape[:2]) / 1600)
    height = int(22 * scale / 0.5)
    for i, text in enumerate(lines):
        y = (i + 1) * height
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(image, (4, y - h - 4), (12 + w, y + 4), (0, 0, 0), -1)
        cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image
