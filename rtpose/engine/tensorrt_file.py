"""rtpose's TensorRT engine file: a small header with the model's metadata, then TensorRT's plan.

Layout::

    b"RTPOSE\\x00\\x01"    8 bytes: the name, NUL, header layout 1
    uint32, little end     length of the JSON that follows
    JSON                   ModelMeta.to_json(), as in the ONNX metadata
    plan                   the bytes of builder.build_serialized_network(...)

The same idea as ultralytics' ``.engine`` files (a 4-byte length, JSON, the
plan), with a magic in front so that a bare plan (from ``trtexec``) is told
apart from rtpose's file and gets a message saying how to make one. Reading
and writing need no TensorRT, so ``open_engine`` checks the header before
it imports TensorRT.
"""

from __future__ import annotations

import struct
from pathlib import Path

from rtpose.engine import EngineError
from rtpose.model_meta import ModelMeta

TENSORRT_SUFFIXES = (".engine", ".plan")
MAGIC = b"RTPOSE\x00\x01"
_LENGTH = struct.Struct("<I")
_MAX_JSON = 1 << 20            # metadata is a few kB; more means the length field is garbage
_BUILD_HINT = "build one with: rtpose export <checkpoint or .onnx> --format tensorrt --output model.engine"


def write_engine_file(path: str | Path, meta: ModelMeta, plan: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = meta.to_json().encode()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(_LENGTH.pack(len(text)))
        f.write(text)
        f.write(plan)
    tmp.replace(path)          # never leave a half-written engine under the real name
    return path


def read_engine_header(data: bytes, path: str | Path = "engine") -> tuple[ModelMeta, int]:
    """The metadata in an engine file's bytes and the offset where the plan starts."""
    if not data.startswith(MAGIC):
        if data[:6] == MAGIC[:6]:
            raise EngineError(f"{path}: rtpose engine header layout {data[7:8].hex()} is not 01; "
                              f"a newer rtpose wrote it")
        raise EngineError(f"{path} is not an rtpose TensorRT engine (no rtpose header; a bare TensorRT plan "
                          f"does not say how to feed the model); {_BUILD_HINT}")
    start = len(MAGIC) + _LENGTH.size
    if len(data) < start:
        raise EngineError(f"{path}: the engine file is cut short")
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    if length > _MAX_JSON or start + length > len(data):
        raise EngineError(f"{path}: damaged rtpose engine header (metadata length {length})")
    try:
        meta = ModelMeta.from_json(data[start:start + length].decode())
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"{path}: unreadable rtpose metadata in the engine header ({exc})") from None
    if start + length == len(data):
        raise EngineError(f"{path}: the engine file holds metadata but no TensorRT plan")
    return meta, start + length


def read_engine_file(path: str | Path) -> tuple[ModelMeta, bytes]:
    """``(metadata, plan)`` of an engine file written by :func:`write_engine_file`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EngineError(f"model file not found: {path}") from None
    meta, offset = read_engine_header(data, path)
    return meta, data[offset:]
