"""Figures from finished frames: FPS, per-stage latency, capture-to-output latency."""

from __future__ import annotations

import numpy as np

from rtpose.pipeline import STAGES, Frame


def spread_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan")}
    ms = 1000 * np.asarray(seconds)
    return {"median_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "max_ms": round(float(ms.max()), 2)}


def summarize(frames: list[Frame], wall_seconds: float) -> dict:
    """FPS over the whole run, each stage's time and the capture-to-output latency."""
    return {
        "frames": len(frames),
        "seconds": round(wall_seconds, 3),
        "fps": round(len(frames) / wall_seconds, 2) if wall_seconds > 0 else 0.0,
        "stages": {s: spread_ms([f.times[s] for f in frames if s in f.times]) for s in STAGES},
        "latency": spread_ms([f.done_at - f.captured_at for f in frames]),
    }
