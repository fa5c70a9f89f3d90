"""trainer.tensorboard_log's event files, read back by TensorBoard's own reader."""

from __future__ import annotations

import math
import struct

import pytest

from trainer.tensorboard_log import ScalarLog, crc32c, masked_crc32c


def tensorboard_reader(name: str):
    return pytest.importorskip(
        f"tensorboard.backend.event_processing.{name}",
        reason="the tensorboard package is not installed (pip install tensorboard, or the dev extra)")


def read_scalars(log_dir) -> dict[str, list[tuple[int, float, float]]]:
    """{tag: [(step, value, wall_time), ...]} as TensorBoard's EventAccumulator reads ``log_dir``."""
    accumulator = tensorboard_reader("event_accumulator").EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283        # the CRC-32C catalogue's check value
    assert crc32c(b"") == 0


def test_masked_crc32c_matches_tensorboards():
    reference = pytest.importorskip(
        "tensorboard.compat.tensorflow_stub.pywrap_tensorflow",
        reason="the tensorboard package is not installed (pip install tensorboard, or the dev extra)")
    for data in (b"", b"123456789", struct.pack("<Q", 42), bytes(range(256)) * 3):
        assert masked_crc32c(data) == reference.masked_crc32c(data)


def test_scalars_read_back_by_tensorboard(tmp_path):
    with ScalarLog(tmp_path) as tb:
        for epoch in range(1, 4):
            tb.add("train/loss", 1.0 / epoch, epoch, wall_time=1000.0 + epoch)
            tb.add("val/AP", 0.125 * epoch, epoch)
        tb.add("train/lr", 3e-4, 2**40)                 # a step past int32
    scalars = read_scalars(tmp_path)
    assert sorted(scalars) == ["train/loss", "train/lr", "val/AP"]
    assert [s for s, _, _ in scalars["train/loss"]] == [1, 2, 3]
    # simple_value is a float32: values come back at float32 precision.
    assert [v for _, v, _ in scalars["train/loss"]] == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-7)
    assert [w for _, _, w in scalars["train/loss"]] == [1001.0, 1002.0, 1003.0]
    assert [(s, v) for s, v, _ in scalars["val/AP"]] == [(1, 0.125), (2, 0.25), (3, 0.375)]
    assert scalars["train/lr"][0][:2] == (2**40, pytest.approx(3e-4, rel=1e-7))


def test_every_record_passes_tensorboards_crc_checks(tmp_path):
    # TensorBoard's loader stops silently at a record whose CRC is wrong, so
    # reading every event back is the check on the framing.
    loader = tensorboard_reader("event_file_loader")
    with ScalarLog(tmp_path) as tb:
        tb.add("loss", 2.5, 7, wall_time=1234.5)
        tb.add("nan", math.nan, 8)
        tb.add("huge", 1e300, 9)                        # beyond float32: stored as inf, as a cast gives
    events = list(loader.LegacyEventFileLoader(str(tb.path)).Load())       # the events as written
    assert len(events) == 4
    assert events[0].file_version == "brain.Event:2"
    assert events[0].source_metadata.writer == "rtpose.trainer.tensorboard_log"
    first = events[1]
    assert (first.wall_time, first.step) == (1234.5, 7)
    assert [(v.tag, v.simple_value) for v in first.summary.value] == [("loss", 2.5)]
    assert math.isnan(events[2].summary.value[0].simple_value)
    assert events[3].summary.value[0].simple_value == math.inf
    # What TensorBoard serves them as, after its compatibility layer: scalars.
    migrated = list(loader.EventFileLoader(str(tb.path)).Load())[1].summary.value[0]
    assert migrated.metadata.plugin_data.plugin_name == "scalars"
    assert migrated.tensor.float_val == [2.5]


def test_resumed_run_adds_a_file_and_replaces_orphaned_steps(tmp_path):
    with ScalarLog(tmp_path) as first:
        for epoch in (1, 2, 3):
            first.add("loss", float(epoch), epoch)
    # Resumed from the checkpoint of epoch 1: epochs 2 and 3 are run again.
    with ScalarLog(tmp_path, start_step=2) as resumed:
        for epoch in (2, 3, 4):
            resumed.add("loss", 10.0 * epoch, epoch)
    assert first.path != resumed.path
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.path.name, resumed.path.name]
    assert [(s, v) for s, v, _ in read_scalars(tmp_path)["loss"]] == [(1, 1.0), (2, 20.0), (3, 30.0), (4, 40.0)]


def test_closed_log_refuses_more_scalars(tmp_path):
    tb = ScalarLog(tmp_path / "new" / "dir")            # the directory is made
    tb.close()
    tb.flush()                                          # harmless once closed
    with pytest.raises(ValueError, match="closed"):
        tb.add("loss", 1.0, 1)
