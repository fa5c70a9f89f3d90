"""onnxruntime backend: CPU here, CUDA or TensorRT execution providers when installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from rtpose.engine import EngineError
from rtpose.errors import first_line
from rtpose.model_meta import FLOAT32_NCHW_RGB, META_KEY, UINT8_NHWC_BGR, ModelMeta, meta_from_text

# Best first; onnxruntime falls back along the list.
_PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeEngine:
    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0) -> None:
        self.path = Path(path)
        available = ort.get_available_providers()
        self.providers = providers or [p for p in _PREFERRED if p in available]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.threads = threads or "default (one per core)"
        # Threads that spin while waiting for work take the CPU from the other
        # pipeline stages; on a small CPU that costs more than it saves.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            first = first_line(exc, type(exc).__name__)
            raise EngineError(f"{self.path} is not a usable ONNX model: {first}") from None
        self.meta = read_meta(self.session, self.path)
        # Either input format runs here: a uint8 model normalises in its own graph (export/input_graph.py).
        input_type = self.session.get_inputs()[0].type
        wanted = {FLOAT32_NCHW_RGB: "tensor(float)", UINT8_NHWC_BGR: "tensor(uint8)"}.get(self.meta.input_format)
        if wanted and input_type != wanted:
            raise EngineError(f"{self.path}: input is {input_type} but its metadata says '{self.meta.input_format}'")
        batch_dim = self.session.get_inputs()[0].shape[0]
        self.max_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None   # None: any
        names = [o.name for o in self.session.get_outputs()]
        if list(self.meta.output_names) != names:
            raise EngineError(f"{self.path}: outputs {names} do not match its metadata {self.meta.output_names}")

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(list(self.meta.output_names), {self.meta.input_name: batch}))

    def close(self) -> None:
        self.session = None


def read_meta(session: ort.InferenceSession, path: Path) -> ModelMeta:
    try:
        return meta_from_text(session.get_modelmeta().custom_metadata_map.get(META_KEY), path)
    except ValueError as exc:
        raise EngineError(str(exc)) from None
