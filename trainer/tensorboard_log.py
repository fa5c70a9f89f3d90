"""Scalars in TensorBoard's event-file format, written with the standard library only.

Training should not need the ``tensorboard`` package (grpcio, pillow, a Rust
data server: about 75 MB) just to leave files that TensorBoard can read, and
a scalar event is small enough to write by hand:

* an event file is a sequence of TFRecords: uint64 length, masked CRC-32C of
  those 8 bytes, the data, masked CRC-32C of the data (all little-endian);
* each record's data is one serialized ``tensorboard.Event`` protobuf. The
  first carries ``file_version: "brain.Event:2"``, the others ``wall_time``,
  ``step`` and ``summary { value { tag, simple_value } }``.

Field numbers, from tensorboard/compat/proto/event.proto and summary.proto
(the same in tensorflow/core/util/event.proto and
tensorflow/core/framework/summary.proto)::

    message Event { double wall_time = 1; int64 step = 2;
                    oneof what { string file_version = 3; Summary summary = 5; ... }
                    SourceMetadata source_metadata = 10; }
    message SourceMetadata { string writer = 1; }
    message Summary { repeated Value value = 1; }
    message Summary.Value { string tag = 1; oneof value { float simple_value = 2; ... } }

Each :class:`ScalarLog` opens a new file, named as TensorBoard's own writer
names them (``events.out.tfevents.<10-digit time>.<host>.<pid>.<nnnn>``): a
resumed run adds a second file to the same directory and TensorBoard reads
the files of a directory in name order, that is in time order.

A run resumed from an older checkpoint writes some steps a second time.
TensorBoard's data server keeps only the newest value of a step and drops
the old run's later steps by itself; its Python loader (``--load_fast=false``,
``EventAccumulator``) does so only after a ``SessionLog START`` event at the
step where the new run begins, which ``ScalarLog(..., start_step=)`` writes::

    message Event { ... oneof what { ... SessionLog session_log = 7; } }
    message SessionLog { SessionStatus status = 1; }    // START = 1
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from pathlib import Path

FILE_VERSION = "brain.Event:2"
EVENT_FILE_PREFIX = "events.out.tfevents."   # how TensorBoard finds event files in a folder
WRITER_NAME = "rtpose.trainer.tensorboard_log"


# --- CRC-32C (Castagnoli), as TFRecord framing needs it -----------------------

def _crc32c_table() -> tuple[int, ...]:
    poly = 0x82F63B78                   # 0x1EDC6F41 bit-reversed: the reflected (LSB-first) form
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data``; ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The CRC that TFRecords store: rotated and offset, because a CRC of data
    that itself holds CRCs is weak (TensorFlow's lib/hash/crc32c.h)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# --- protobuf wire format: the few field kinds an Event needs ------------------

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF         # int64: a negative number is its 64-bit two's complement (10 bytes)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _int64_field(field: int, value: int) -> bytes:
    return _key(field, _VARINT) + _varint(value)


def _double_field(field: int, value: float) -> bytes:
    return _key(field, _FIXED64) + struct.pack("<d", value)


def _float_field(field: int, value: float) -> bytes:
    try:
        packed = struct.pack("<f", value)
    except OverflowError:               # finite but beyond float32: what a float32 cast gives
        packed = struct.pack("<f", math.copysign(math.inf, value))
    return _key(field, _FIXED32) + packed


def _bytes_field(field: int, value: bytes) -> bytes:
    return _key(field, _LENGTH_DELIMITED) + _varint(len(value)) + value


def file_version_event(wall_time: float) -> bytes:
    """The serialized Event that opens every event file."""
    source_metadata = _bytes_field(1, WRITER_NAME.encode())
    return (_double_field(1, wall_time) + _bytes_field(3, FILE_VERSION.encode())
            + _bytes_field(10, source_metadata))


def session_start_event(step: int, wall_time: float) -> bytes:
    """The serialized Event saying a (resumed) run starts at ``step``."""
    start = 1                           # SessionLog.SessionStatus.START
    return _double_field(1, wall_time) + _int64_field(2, step) + _bytes_field(7, _int64_field(1, start))


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
    """The serialized Event holding one scalar."""
    summary_value = _bytes_field(1, tag.encode()) + _float_field(2, value)
    summary = _bytes_field(1, summary_value)
    return _double_field(1, wall_time) + _int64_field(2, step) + _bytes_field(5, summary)


# --- the writer ---------------------------------------------------------------

# Two logs opened in one second by one process still get two files, and in
# the order they were opened: TensorBoard reads a directory's files sorted by
# name, so the number is zero-padded (TensorBoard's own writer leaves it bare).
_file_counter = itertools.count()


class ScalarLog:
    """Scalars for TensorBoard, one new event file in ``log_dir`` per log.

    >>> with ScalarLog(out / "tensorboard") as tb:
    ...     tb.add("train/loss", 0.25, step=1)

    ``start_step``: the first step a resumed run will write, so that
    TensorBoard drops what an earlier run wrote at that step and after.

    Each ``add`` goes to the file at once: metrics come once an epoch, so a
    write per scalar costs nothing, TensorBoard sees them during training,
    and a run that dies loses none.
    """

    def __init__(self, log_dir: str | Path, start_step: int | None = None):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = (f"{EVENT_FILE_PREFIX}{int(now):010d}.{socket.gethostname()}"
                f".{os.getpid()}.{next(_file_counter):04d}")
        self.path = self.log_dir / name
        self._file = open(self.path, "xb")   # never append to, or clobber, another writer's file
        self._file.write(tfrecord(file_version_event(now)))
        if start_step is not None:
            self._file.write(tfrecord(session_start_event(int(start_step), now)))
        self._file.flush()

    def add(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """Record ``value`` (anything ``float()`` takes: numpy and torch scalars too) under ``tag`` at ``step``."""
        if self._file.closed:
            raise ValueError(f"ScalarLog {self.path} is closed")
        event = scalar_event(tag, float(value), int(step), time.time() if wall_time is None else float(wall_time))
        self._file.write(tfrecord(event))
        self._file.flush()

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ScalarLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
