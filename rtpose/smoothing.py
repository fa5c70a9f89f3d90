"""Keypoints that do not jitter and do not lag: the One-Euro filter (Casiez, Roussel and Vogel, CHI 2012).

A first-order low-pass filter whose cutoff frequency rises with the speed of
what it filters: a still keypoint is smoothed hard (cutoff ``min_cutoff``, the
detector's jitter goes), a fast one hardly at all (cutoff ``min_cutoff + beta *
speed``, so a swinging arm is not dragged behind). Speed is itself low-passed
(cutoff ``d_cutoff``) so noise alone does not open the filter.

Here each keypoint of each tracked person is one 2-D point; its speed is the
length of its filtered velocity divided by its person's size (``scale``,
pixels), i.e. in person heights per second. One tuning then serves people
near and far, and video of any resolution. Time is in seconds (the frames'
timestamps), so a camera that drops frames or a 10 FPS file is filtered alike.

The filter is a pure function over arrays of any leading shape (tracks x
keypoints in the tracker): :func:`one_euro` takes the state and the new
measurements and returns the filtered values and the new state. A point not
measured this time keeps its state untouched; a point never measured before
starts at its first measurement with zero speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_DT = 1e-3   # seconds; two frames with the same timestamp are taken as 1 ms apart


@dataclass(frozen=True)
class OneEuroConfig:
    """Tuned on synthetic videos at 15 FPS (benchmarks/README.md, "Tracking"), with the tracker
    moving each filter with its person (so ``beta`` answers limbs, not walking).

    At rest the cutoff is 1 Hz: at 15 FPS a new measurement weighs 0.30 and
    the jitter of noisy detections falls by more than half. At one person
    height per second (a swung arm) it is 1 + 10 = 11 Hz, weight 0.82, so a
    point trails steady motion by 0.22 of a frame's movement. Of the pairs
    tried (``min_cutoff`` 0.5 to 2 Hz, ``beta`` 4 to 20), this one kept the
    shipped model's people paired with the ground truth within 1% of the raw
    keypoints; ``beta`` 4 smooths more and lost 4% of them to lag.
    """

    min_cutoff: float = 1.0   # Hz, at rest
    beta: float = 10.0        # Hz added per person height per second of speed
    d_cutoff: float = 1.0     # Hz, for the speed estimate

    def __post_init__(self) -> None:
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError("One-Euro cutoffs must be positive and beta not negative")


@dataclass(frozen=True)
class OneEuroState:
    """Per point: last filtered value ``[..., D]``, filtered velocity ``[..., D]`` (units per second) and
    when it was last measured ``[...]`` (NaN: never)."""

    value: np.ndarray
    velocity: np.ndarray
    time: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, ...], dims: int = 2) -> "OneEuroState":
        return cls(np.zeros((*shape, dims), np.float64), np.zeros((*shape, dims), np.float64),
                   np.full(shape, np.nan))

    def take(self, index: np.ndarray) -> "OneEuroState":
        return OneEuroState(self.value[index], self.velocity[index], self.time[index])


def smoothing_factor(cutoff: np.ndarray | float, dt: np.ndarray | float) -> np.ndarray:
    """The weight of a new sample in an exponential filter with this cutoff (Hz) after ``dt`` seconds."""
    r = 2 * math.pi * np.asarray(cutoff) * np.asarray(dt)
    return r / (r + 1)


def one_euro(state: OneEuroState, x: np.ndarray, t: np.ndarray | float, measured: np.ndarray,
             scale: np.ndarray | float = 1.0, config: OneEuroConfig = OneEuroConfig(),
             restart: np.ndarray | None = None) -> tuple[np.ndarray, OneEuroState]:
    """Filter ``x [..., D]`` measured at time ``t`` (seconds; broadcast over the points).

    ``measured [...]`` says which points were measured; the others keep their
    state and their output is their last filtered value. ``restart [...]``
    says which measured points start afresh, as a point never measured does
    (their output is the measurement). ``scale`` (broadcast over the points)
    divides speeds before ``beta`` applies. Returns the filtered values and
    the new state.
    """
    x = np.asarray(x, np.float64)
    t = np.broadcast_to(np.asarray(t, np.float64), measured.shape)
    fresh = measured & (np.isnan(state.time) if restart is None else (np.isnan(state.time) | restart))
    update = measured & ~fresh
    dt = np.maximum(np.where(update, t - np.nan_to_num(state.time), 1.0), MIN_DT)[..., None]
    velocity = (x - state.value) / dt
    a_d = smoothing_factor(config.d_cutoff, dt)
    velocity = a_d * velocity + (1 - a_d) * state.velocity
    speed = np.linalg.norm(velocity, axis=-1, keepdims=True) / np.maximum(
        np.broadcast_to(np.asarray(scale, np.float64), measured.shape)[..., None], 1e-6)
    a = smoothing_factor(config.min_cutoff + config.beta * speed, dt)
    value = a * x + (1 - a) * state.value

    keep_value = ~measured[..., None]
    value = np.where(keep_value, state.value, np.where(fresh[..., None], x, value))
    velocity = np.where(update[..., None], velocity, np.where(fresh[..., None], 0.0, state.velocity))
    time = np.where(measured, t, state.time)
    return value, OneEuroState(value, velocity, time)
