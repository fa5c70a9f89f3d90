"""Figures from finished frames: FPS, per-stage latency, capture-to-output latency, queue depths."""

from __future__ import annotations

import numpy as np

from rtpose.pipeline import STAGES, Frame

QUEUES = ("capture>preprocess", "preprocess>inference", "inference>decode", "decode>sink")


def spread_ms(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan")}
    ms = 1000 * np.asarray(seconds)
    return {"median_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "max_ms": round(float(ms.max()), 2)}


def summarize(frames: list[Frame], wall_seconds: float, sources: list[dict] | None = None) -> dict:
    """FPS over the whole run, each stage's time, the capture-to-output latency and, per source, drops."""
    depths = np.array([f.queue_depths for f in frames if f.queue_depths], dtype=float).reshape(-1, len(QUEUES))
    return {
        "frames": len(frames),
        "seconds": round(wall_seconds, 3),
        "fps": round(len(frames) / wall_seconds, 2) if wall_seconds > 0 else 0.0,
        # A stage no frame went through (tracking, when off) is left out.
        "stages": {s: spread_ms([f.times[s] for f in frames if s in f.times]) for s in STAGES
                   if not frames or any(s in f.times for f in frames)},
        "latency": spread_ms([f.done_at - f.captured_at for f in frames]),
        "batch": {"mean": round(float(np.mean([f.batch for f in frames])), 2) if frames else 0.0,
                  "max": max((f.batch for f in frames), default=0)},
        "queue_depths": {q: {"mean": round(float(depths[:, i].mean()), 2) if len(depths) else 0.0,
                             "max": int(depths[:, i].max()) if len(depths) else 0} for i, q in enumerate(QUEUES)},
        "sources": sources or [],
    }
