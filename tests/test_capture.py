"""Frame policies and several sources: latest-frame drops and counts, keep-all keeps every frame, batches mix sources."""

import threading
import time

import numpy as np
import pytest

from rtpose.capture import Gather
from rtpose.model_meta import ModelMeta
from rtpose.pipeline import Pipeline, RunOptions
from tests.test_pipeline import ListSource, RecordingSink, run_with_timeout

META = ModelMeta(input_width=64, input_height=64)


class PacedSource(ListSource):
    """A live-like source delivering a frame every ``interval`` seconds."""

    live = True

    def __init__(self, n, interval, fail_at=None):
        super().__init__(n, fail_at=fail_at)
        self.interval = interval

    def read(self):
        time.sleep(self.interval)
        return super().read()


class BatchEngine:
    """Outputs with the batch size of the input, so batching is visible; ``max_batch`` as the engine says."""

    meta = META

    def __init__(self, max_batch=None, seconds=0.0):
        self.max_batch, self.seconds, self.batches = max_batch, seconds, []

    def infer(self, batch):
        self.batches.append(len(batch))
        time.sleep(self.seconds)
        k, d = META.skeleton.num_keypoints, META.skeleton.num_offset_channels
        return tuple(np.zeros((len(batch), c, 16, 16), np.float32) for c in (k, d, 2 * k))

    def close(self):
        pass


def take_all(gather, limit=1, pause=0.0):
    taken, stop = [], threading.Event()
    while (batch := gather.take(limit, stop)) is not None:
        taken.append(batch)
        time.sleep(pause)
    gather.close()
    return taken


def pixel(captured):
    return int(captured.frame.image[0, 0, 0])


def test_latest_policy_hands_over_the_newest_frame_and_counts_the_rest():
    source = PacedSource(60, interval=0.002)
    gather = Gather([source], ["latest"])
    taken = [b[0] for b in take_all(gather, pause=0.02)]     # a consumer ten times slower than the source
    numbers = [pixel(c) for c in taken]
    reader = gather.readers[0]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert reader.dropped > 20 and reader.dropped + len(taken) == reader.read == 60
    assert numbers[-1] == 59                                   # the last frame is never lost
    assert source.closed


def test_keep_all_policy_delivers_every_frame_in_order_however_slow_the_consumer():
    gather = Gather([ListSource(40)], ["all"])
    numbers = [pixel(b[0]) for b in take_all(gather, pause=0.002)]
    assert numbers == list(range(40)) and gather.readers[0].dropped == 0


def test_batches_take_at_most_one_frame_per_source_and_keep_each_source_in_order():
    gather = Gather([ListSource(30), ListSource(50), ListSource(10)], ["all"] * 3)
    batches = take_all(gather, limit=2)
    assert all(len(b) <= 2 and len({c.source for c in b}) == len(b) for b in batches)
    for index, n in enumerate((30, 50, 10)):
        assert [pixel(c) for b in batches for c in b if c.source == index] == list(range(n))


def test_a_source_that_breaks_does_not_stop_the_others():
    gather = Gather([ListSource(40, fail_at=10), ListSource(40)], ["all", "all"])
    batches = take_all(gather, limit=2)
    assert [pixel(c) for b in batches for c in b if c.source == 0] == list(range(10))
    assert [pixel(c) for b in batches for c in b if c.source == 1] == list(range(40))
    assert ["source broke at 10" in str(e) for e in gather.errors] == [True]


def test_pipeline_batches_sources_into_one_inference_call_and_writes_each_to_its_own_sinks():
    sinks = [RecordingSink(), RecordingSink()]
    engine = BatchEngine(seconds=0.005)
    pipeline = Pipeline([ListSource(30), ListSource(20)], engine, [[sinks[0]], [sinks[1]]], RunOptions(overlay=False))
    result = run_with_timeout(pipeline)
    assert "error" not in result
    assert [v for _, v in sinks[0].seen] == list(range(30)) and [v for _, v in sinks[1].seen] == list(range(20))
    assert [i for i, _ in sinks[0].seen] == list(range(30))    # frame numbers count within each source
    assert max(engine.batches) == 2 and sum(engine.batches) == 50 and len(engine.batches) < 50


@pytest.mark.parametrize("engine_max, asked, expected", [(1, None, 1), (None, 1, 1), (None, None, 3), (2, None, 2)])
def test_batch_size_respects_the_engine_and_the_user(engine_max, asked, expected):
    engine = BatchEngine(max_batch=engine_max, seconds=0.01)
    pipeline = Pipeline([ListSource(12) for _ in range(3)], engine, [[RecordingSink()] for _ in range(3)],
                        RunOptions(overlay=False, max_batch=asked))
    assert "error" not in run_with_timeout(pipeline)
    assert max(engine.batches) == expected and sum(engine.batches) == 36


def test_live_source_with_a_slow_engine_keeps_latency_bounded():
    # A 200 FPS source into a 25 FPS engine: with keep-all the backlog (and the
    # latency) would grow by ~7 ms every frame; latest-frame keeps it flat.
    sink = RecordingSink()
    pipeline = Pipeline([PacedSource(400, interval=0.005)], BatchEngine(seconds=0.04), [[sink]],
                        RunOptions(overlay=False))
    frames = run_with_timeout(pipeline, seconds=30)["frames"]
    latency = [1000 * (f.done_at - f.captured_at) for f in frames]
    assert len(frames) > 20
    assert np.median(latency[-10:]) < 2.5 * np.median(latency[:10]) + 20
    assert np.median(latency) < 4 * 40                           # a few engine calls, not a backlog
    report = pipeline.source_report()[0]
    assert report["dropped"] > 200 and report["written"] == len(frames) and report["policy"] == "latest"


class SlowSink(RecordingSink):
    """Writing takes ``seconds``: the decode-to-sink half of the pipeline as long as a good part of inference."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def write(self, frame):
        time.sleep(self.seconds)
        super().write(frame)


def test_two_in_flight_keep_the_engine_busy_without_making_frames_wait_for_it():
    # A 200 FPS source, a 60 ms engine and 20 ms of writing per frame. One
    # batch in flight: a frame every 80 ms. Two: the engine runs while the
    # previous frame is written, a frame every 60 ms; taken as soon as the
    # written frame left, the next would then wait 40 ms for the engine, but
    # it is taken just before the engine frees.
    runs = {}
    for in_flight in (1, 2):
        pipeline = Pipeline([PacedSource(600, interval=0.005)], BatchEngine(seconds=0.06), [[SlowSink(0.02)]],
                            RunOptions(overlay=False, in_flight=in_flight))
        frames = run_with_timeout(pipeline, seconds=30)["frames"][5:]     # past the first estimates
        period = (frames[-1].done_at - frames[0].done_at) / (len(frames) - 1)
        runs[in_flight] = period, np.median([f.done_at - f.captured_at for f in frames])
    (period_1, latency_1), (period_2, latency_2) = runs[1], runs[2]
    assert period_2 < 0.85 * period_1                # the engine is kept busy: more frames
    assert latency_2 < latency_1 + 0.015             # and no frame waits for it


def test_max_frames_stops_the_run():
    sink = RecordingSink()
    result = run_with_timeout(Pipeline([ListSource(1000)], BatchEngine(), [[sink]],
                                       RunOptions(overlay=False, max_frames=25)))
    assert len(result["frames"]) == 25 and [i for i, _ in sink.seen] == list(range(25))
