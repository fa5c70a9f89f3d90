"""rtpose's TensorRT engine file: a small header with the model's metadata and build record, then TensorRT's plan.

Layout 2 (written now)::

    b"RTPOSE\\x00\\x02"    8 bytes: the name, NUL, header layout 2
    uint32, little end     length of the JSON that follows
    JSON                   {"meta": ModelMeta as in the ONNX metadata,
                            "build": how the engine was built: precision, batch range of
                            the optimization profile, TensorRT version, workspace, timing
                            cache, source ONNX and its SHA-256, rtpose version, time}
    plan                   the bytes of builder.build_serialized_network(...)

Layout 1 (read still): the same with ``\\x01`` and the ModelMeta JSON alone.

The same idea as ultralytics' ``.engine`` files (a 4-byte length, JSON, the
plan), with a magic in front so that a bare plan (from ``trtexec``) is told
apart from rtpose's file and gets a message saying how to make one. Reading
and writing need no TensorRT, so ``open_engine`` checks the header before
it imports TensorRT.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from rtpose.engine import EngineError
from rtpose.model_meta import ModelMeta

TENSORRT_SUFFIXES = (".engine", ".plan")
MAGIC = b"RTPOSE\x00\x02"        # layout 2: metadata and build record
MAGIC_V1 = b"RTPOSE\x00\x01"     # layout 1: metadata only
_LENGTH = struct.Struct("<I")
_MAX_JSON = 1 << 20            # metadata is a few kB; more means the length field is garbage
_BUILD_HINT = "build one with: rtpose export <checkpoint or .onnx> --format tensorrt --output model.engine"


def write_engine_file(path: str | Path, meta: ModelMeta, plan: bytes, build: dict | None = None) -> Path:
    """Header (layout 2) and plan, written under a temporary name first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"meta": json.loads(meta.to_json()), "build": build or {}}, sort_keys=True).encode()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(_LENGTH.pack(len(text)))
        f.write(text)
        f.write(plan)
    tmp.replace(path)          # never leave a half-written engine under the real name
    return path


def _parse_header(data: bytes, path: str | Path) -> tuple[ModelMeta, dict, int]:
    if not (data.startswith(MAGIC) or data.startswith(MAGIC_V1)):
        if data[:6] == MAGIC[:6]:
            raise EngineError(f"{path}: rtpose engine header layout {data[7:8].hex()} is not 01 or 02; "
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
        record = json.loads(data[start:start + length].decode())
        if data.startswith(MAGIC_V1):
            meta, build = ModelMeta.from_json(json.dumps(record)), {}
        else:
            meta, build = ModelMeta.from_json(json.dumps(record["meta"])), dict(record.get("build") or {})
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"{path}: unreadable rtpose metadata in the engine header ({exc})") from None
    if start + length == len(data):
        raise EngineError(f"{path}: the engine file holds metadata but no TensorRT plan")
    return meta, build, start + length


def read_engine_header(data: bytes, path: str | Path = "engine") -> tuple[ModelMeta, int]:
    """The metadata in an engine file's bytes and the offset where the plan starts."""
    meta, _, offset = _parse_header(data, path)
    return meta, offset


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise EngineError(f"model file not found: {path}") from None


def read_engine_file(path: str | Path) -> tuple[ModelMeta, bytes]:
    """``(metadata, plan)`` of an engine file written by :func:`write_engine_file`."""
    path = Path(path)
    data = _read(path)
    meta, offset = read_engine_header(data, path)
    return meta, data[offset:]


def read_engine_build(path: str | Path) -> dict:
    """How the engine at ``path`` was built (``{}`` for a layout-1 file, which did not record it)."""
    path = Path(path)
    _, build, _ = _parse_header(_read(path), path)
    return build


def describe_build(build: dict) -> str:
    """One line from a build record: precision, batch range, TensorRT version, source."""
    if not build:
        return "build not recorded (an engine file from an older rtpose)"
    get = build.get
    return (f"{get('precision', '?').upper()}, batch {get('min_batch', '?')}..{get('max_batch', '?')} "
            f"(tuned for {get('opt_batch', '?')}), TensorRT {get('tensorrt', '?')}, "
            f"{get('input_format', '?')} input, from {get('source', '?')}")
