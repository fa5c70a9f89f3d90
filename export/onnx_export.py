"""Checkpoint -> ONNX with rtpose metadata, then a parity check against torch."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

import rtpose
from export.formats import with_input_size
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.engine.torch_engine import as_outputs
from rtpose.model_meta import META_KEY, ModelMeta
from trainer.checkpoint import load_model

MIN_OPSET = 17
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: dict[str, float]     # output name -> largest difference
    batch: int

    def __str__(self) -> str:
        diffs = ", ".join(f"{name} {d:.2e}" for name, d in self.max_abs_diff.items())
        return f"onnxruntime vs torch, batch {self.batch}: max |diff| {diffs}"


def export_onnx(checkpoint: str | Path, output: str | Path, opset: int = DEFAULT_OPSET,
                input_size: tuple[int, int] | None = None) -> Path:
    """Write an ONNX model with dynamic batch and the checkpoint's :class:`ModelMeta` inside.

    ``input_size``: (width, height) the file takes, if not the training size.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is below {MIN_OPSET}, the lowest rtpose exports")
    model, meta, _ = load_model(checkpoint)
    meta = with_input_size(meta, input_size).with_versions(rtpose=rtpose.__version__, torch=torch.__version__,
                              onnx=onnx.__version__, opset=str(opset))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, meta.input_height, meta.input_width)
    batch = torch.export.Dim("batch", min=1, max=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The exporter logs a line per torchvision op it cannot register; rtpose uses none.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(model, (example,), input_names=[meta.input_name],
                                    output_names=list(meta.output_names), dynamic_shapes=({0: batch},),
                                    opset_version=opset, dynamo=True, verbose=False)
    proto = program.model_proto
    _set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(output))
    return output


def _set_metadata(proto: onnx.ModelProto, meta: ModelMeta) -> None:
    for entry in list(proto.metadata_props):
        if entry.key == META_KEY:
            proto.metadata_props.remove(entry)
    proto.metadata_props.add(key=META_KEY, value=meta.to_json())
    proto.producer_name = "rtpose"
    proto.producer_version = rtpose.__version__
    proto.doc_string = (f"rtpose {meta.architecture}: {meta.skeleton.name} keypoints, input "
                        f"{meta.input_width}x{meta.input_height}, stride {meta.stride}")


def check_parity(checkpoint: str | Path, onnx_path: str | Path, batch: int = 2, seed: int = 0) -> ParityReport:
    """Run the same input through torch and onnxruntime; a batch > 1 also checks the dynamic batch."""
    model, _, _ = load_model(checkpoint)
    engine = OnnxRuntimeEngine(onnx_path)
    meta = engine.meta                   # the exported input size, which may not be the training one
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, meta.input_height, meta.input_width)).astype(np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in as_outputs(model(torch.from_numpy(x)))]
    got = engine.infer(x)
    engine.close()
    diffs = {name: float(np.abs(a - b).max()) for name, a, b in zip(meta.output_names, expected, got)}
    return ParityReport(diffs, batch)
