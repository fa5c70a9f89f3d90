"""Drawing people on frames: a skeleton per person in its own colour, and a stats overlay."""

from __future__ import annotations

import cv2
import numpy as np

from rtpose.decoder import People
from rtpose.skeleton import Skeleton

# Well separated hues (BGR), one per person, cycled.
PALETTE = [(0, 128, 255), (255, 128, 0), (0, 220, 0), (255, 0, 255), (0, 255, 255), (255, 255, 0),
           (128, 0, 255), (0, 0, 255), (255, 0, 0), (128, 255, 128), (0, 100, 128), (200, 200, 200)]


def draw_people(image: np.ndarray, people: People, skeleton: Skeleton, min_score: float = 0.2,
                colours: list[int] | None = None) -> np.ndarray:
    """Draw in place: limbs between keypoints both scoring ``min_score`` or more, then the keypoints.

    ``colours`` picks a palette index per person (a track id, say); by default
    the person's rank.
    """
    scale = max(1, round(max(image.shape[:2]) / 640))
    for i, keypoints in enumerate(people.keypoints):
        colour = PALETTE[(colours[i] if colours is not None else i) % len(PALETTE)]
        shown = keypoints[:, 2] >= min_score
        points = np.round(keypoints[:, :2]).astype(np.int32)
        for a, b in skeleton.limbs:
            if shown[a] and shown[b]:
                cv2.line(image, tuple(points[a]), tuple(points[b]), colour, 2 * scale, cv2.LINE_AA)
        for k in np.flatnonzero(shown):
            # Brighter centre for surer keypoints.
            cv2.circle(image, tuple(points[k]), 3 * scale, colour, -1, cv2.LINE_AA)
            cv2.circle(image, tuple(points[k]), max(1, round(2 * scale * keypoints[k, 2])), (255, 255, 255), -1,
                       cv2.LINE_AA)
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
