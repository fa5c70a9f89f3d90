"""ONNX files as rtpose keeps them: loading with one-line errors, the metadata in them, rewriting one into another.

Needs only ``onnx`` (no torch), so an ``.onnx`` file can be converted where
the trainer is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx

from export.formats import ExportError
from rtpose.model_meta import META_KEY, ModelMeta, meta_from_text


def load_onnx(path: str | Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise ExportError(f"ONNX model not found: {path}") from None
    except Exception as exc:  # onnx raises protobuf's own errors for a file that is not ONNX
        raise ExportError(f"{path} is not an ONNX model ({type(exc).__name__})") from None


def read_onnx_meta(model: onnx.ModelProto, source: str | Path = "model") -> ModelMeta:
    try:
        return meta_from_text({p.key: p.value for p in model.metadata_props}.get(META_KEY), source)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def write_onnx_meta(model: onnx.ModelProto, meta: ModelMeta) -> None:
    for entry in list(model.metadata_props):
        if entry.key == META_KEY:
            model.metadata_props.remove(entry)
    model.metadata_props.add(key=META_KEY, value=meta.to_json())


def rewrite_onnx(source: str | Path, output: str | Path,
                 transform: Callable[[onnx.ModelProto], onnx.ModelProto]) -> Path:
    """Load ``source``, transform it, save it as ``output`` (which may be ``source``)."""
    model = transform(load_onnx(source))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(output))
    return output
