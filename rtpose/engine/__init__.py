"""Engines run a model: ``infer(batch) -> (heatmaps, offsets, refinements)``.

The batch is what the model's ``meta.input_format`` says (float32 ``[N, 3, H, W]``
normalised RGB, or uint8 ``[N, H, W, 3]`` BGR pixels); ``rtpose.preprocess``
makes it. One small interface, one module per backend (onnxruntime, TensorRT,
torch); each backend imports its own library inside its module, so ``import
rtpose`` pulls in none of them, and :func:`open_engine` picks the backend by
the model file.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from rtpose.model_meta import ModelMeta


class EngineError(RuntimeError):
    """A model file that cannot be used, or a backend that failed."""


class Engine(Protocol):
    meta: ModelMeta
    max_batch: int | None      # the largest batch ``infer`` takes; None: any size

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """The outputs named in ``meta.output_names``, in that order."""

    def close(self) -> None: ...


def open_engine(model: str | Path, threads: int = 0, fp16: bool = False, cuda_graphs: bool = False) -> Engine:
    """The engine for a model file, chosen by what the file is.

    ``threads`` caps the backend's own CPU threads (0: the backend's default).
    ``fp16`` and ``cuda_graphs`` are the torch engine's (CUDA only); ONNX and
    TensorRT files carry their precision in the graph.
    """
    path = Path(model)
    if not path.is_file():
        raise EngineError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if (fp16 or cuda_graphs) and suffix != ".pt2":
        raise EngineError("--fp16 and --cuda-graphs apply to torch programs (.pt2); an ONNX or TensorRT file has "
                          "its precision in the graph: rtpose export --precision fp16, or rtpose calib for INT8")
    if suffix == ".onnx":
        from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
        return OnnxRuntimeEngine(path, threads=threads)
    if suffix in (".engine", ".plan"):
        from rtpose.engine.tensorrt_file import read_engine_file
        read_engine_file(path)                   # a file that is not rtpose's says so before TensorRT loads
        with _backend("a TensorRT engine", "TensorRT and cuda-python", ("tensorrt", "cuda"),
                      "pip install 'rtpose[tensorrt]' on a machine with an NVIDIA GPU and driver"):
            from rtpose.engine.tensorrt_engine import TensorRTEngine
        return TensorRTEngine(path)
    if suffix == ".pt2":
        with _backend("a torch program", "torch", ("torch",), "pip install torch (or 'rtpose[train]')"):
            from rtpose.engine.torch_engine import TorchEngine
        return TorchEngine.from_file(path, threads=threads, fp16=fp16, cuda_graphs=cuda_graphs)
    if suffix in (".pt", ".pth"):
        raise EngineError(f"{path} looks like a training checkpoint; the runtime runs exported models: "
                          f"rtpose export {path} --output model.onnx (or --format tensorrt / --format torch)")
    raise EngineError(f"{path}: unknown model format '{path.suffix}' "
                      f"(expected .onnx, .engine/.plan from TensorRT, or .pt2 from torch)")


@contextmanager
def _backend(what: str, needs: str, modules: tuple[str, ...], install: str):
    """A backend's library missing -> one EngineError line saying what to install."""
    try:
        yield
    except ImportError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] not in modules:
            raise
        raise EngineError(f"running {what} needs {needs} ({missing} is not importable): {install}") from None
