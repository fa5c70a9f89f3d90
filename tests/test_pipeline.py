"""The threaded pipeline's guarantees: order, every frame, errors that stop it without a hang."""

import threading
import time

import cv2
import numpy as np
import pytest

from rtpose.model_meta import ModelMeta
from rtpose.pipeline import Pipeline, RunOptions
from rtpose.sinks import VideoSink
from rtpose.sources import SourceFrame

META = ModelMeta(input_width=64, input_height=64)


class ListSource:
    """Frames from memory: each frame's first pixel holds its number."""

    name, fps, live = "list", 10.0, False

    def __init__(self, n, fail_at=None, stall_at=None):
        self.n, self.fail_at, self.stall_at, self.i = n, fail_at, stall_at, 0
        self.frame_count = n
        self.closed = False

    def read(self):
        if self.i == self.fail_at:
            raise RuntimeError(f"source broke at {self.i}")
        if self.i >= self.n:
            return None
        image = np.zeros((48, 64, 3), np.uint8)
        image[0, 0] = self.i % 256
        self.i += 1
        return SourceFrame(image, self.i / self.fps)

    def interrupt(self):
        pass

    def close(self):
        self.closed = True


class FakeEngine:
    """A stand-in for the model (the pipeline, not the network, is under test): random-time inference."""

    meta = META

    def __init__(self, fail_at=None):
        self.fail_at, self.calls = fail_at, 0

    def infer(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("engine failed")
        time.sleep(np.random.default_rng(self.calls).uniform(0, 0.004))
        k, d = META.skeleton.num_keypoints, META.skeleton.num_offset_channels
        return tuple(np.zeros((1, c, 16, 16), np.float32) for c in (k, d, 2 * k))

    def close(self):
        pass


class RecordingSink:
    def __init__(self, fail_at=None):
        self.seen, self.fail_at, self.closed = [], fail_at, False

    def write(self, frame):
        if len(self.seen) == self.fail_at:
            raise OSError("No space left on device")
        self.seen.append((frame.index, int(frame.rendered[0, 0, 0])))

    def close(self):
        self.closed = True


def run_with_timeout(pipeline, seconds=20):
    result = {}

    def target():
        try:
            result["frames"] = pipeline.run()
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "pipeline hung"
    return result


def test_every_frame_arrives_in_capture_order():
    sink = RecordingSink()
    result = run_with_timeout(Pipeline([ListSource(60)], FakeEngine(), [[sink]], RunOptions(overlay=False)))
    assert "error" not in result
    assert [i for i, _ in sink.seen] == list(range(60))
    assert [v for _, v in sink.seen] == list(range(60))       # each frame's own pixels
    assert sink.closed
    assert all(set(f.times) == {"capture", "preprocess", "inference", "decode", "render", "sink"}
               for f in result["frames"])


@pytest.mark.parametrize("where", ["engine", "sink"])
def test_a_failing_stage_stops_everything_and_reports(where):
    sink = RecordingSink(fail_at=5 if where == "sink" else None)
    source = ListSource(10_000)
    engine = FakeEngine(fail_at=7 if where == "engine" else None)
    result = run_with_timeout(Pipeline([source], engine, [[sink]], RunOptions(overlay=False)))
    assert isinstance(result["error"], (RuntimeError, OSError))
    assert sink.closed and source.closed
    assert source.i < 10_000                                   # capture stopped early


def test_a_broken_source_still_delivers_the_frames_before_the_break():
    sink = RecordingSink()
    result = run_with_timeout(Pipeline([ListSource(100, fail_at=30)], FakeEngine(), [[sink]]))
    assert "source broke at 30" in str(result["error"])
    assert [i for i, _ in sink.seen] == list(range(30))


def test_stop_request_drains_what_was_captured():
    sink = RecordingSink()
    pipeline = Pipeline([ListSource(100_000)], FakeEngine(), [[sink]])
    threading.Timer(0.3, pipeline.request_stop).start()
    result = run_with_timeout(pipeline)
    assert "error" not in result
    n = len(result["frames"])
    assert 0 < n < 100_000 and [i for i, _ in sink.seen] == list(range(n))


def test_video_written_before_a_failure_is_playable(tmp_path):
    path = tmp_path / "partial.mp4"
    pipeline = Pipeline([ListSource(1000)], FakeEngine(fail_at=25), [[VideoSink(path, 10)]], RunOptions(overlay=False))
    result = run_with_timeout(pipeline)
    assert "engine failed" in str(result["error"])
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert 10 <= frames < 25


def test_sequential_run_does_the_same_work():
    sink = RecordingSink()
    frames = Pipeline([ListSource(20)], FakeEngine(), [[sink]]).run_sequential()
    assert len(frames) == 20 and [i for i, _ in sink.seen] == list(range(20))


class PosesOnlySink(RecordingSink):
    """Writes poses only, as the JSON lines sink does: keeps what it was given as pixels."""

    uses_pixels = False

    def write(self, frame):
        self.seen.append((frame.index, frame.rendered))


def test_drawing_is_skipped_where_no_sink_uses_the_pixels_unless_asked_for():
    poses, pixels = PosesOnlySink(), RecordingSink()     # RecordingSink reads the drawn frame
    result = run_with_timeout(Pipeline([ListSource(5), ListSource(5)], FakeEngine(), [[poses], [pixels]]))
    assert "error" not in result
    assert [r for _, r in poses.seen] == [None] * 5
    assert len(pixels.seen) == 5
    forced = PosesOnlySink()
    assert "error" not in run_with_timeout(Pipeline([ListSource(3)], FakeEngine(), [[forced]],
                                                    RunOptions(render=True)))
    assert all(r is not None and r.shape == (48, 64, 3) for _, r in forced.seen)
