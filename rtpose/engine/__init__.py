"""Engines run a model: ``infer([N, 3, H, W] float32) -> (heatmaps, offsets, refinements)``.

One small interface, one module per backend; each backend imports its own
library inside its module, so ``import rtpose`` pulls in none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from rtpose.model_meta import ModelMeta


class EngineError(RuntimeError):
    """A model file that cannot be used, or a backend that failed."""


class Engine(Protocol):
    meta: ModelMeta

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """The outputs named in ``meta.output_names``, in that order."""

    def close(self) -> None: ...


def open_engine(model: str | Path, threads: int = 0) -> Engine:
    """The engine for a model file, chosen by what the file is.

    ``threads`` caps the backend's own CPU threads (0: the backend's default).
    """
    path = Path(model)
    if not path.is_file():
        raise EngineError(f"model file not found: {path}")
    if path.suffix == ".onnx":
        from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
        return OnnxRuntimeEngine(path, threads=threads)
    raise EngineError(f"{path}: unknown model format '{path.suffix}' (expected .onnx)")
