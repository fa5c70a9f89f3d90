"""Tracking and smoothing: identities that last, keypoints that do not jitter, and `rtpose run --track`.

Synthetic videos give every person's keypoints and identity per frame
(``rtpose.synthetic.video``). The person walking alone is detected by the
shipped model, as `rtpose run` would; the two people crossing are detected
as ground truth with noise, lost keypoints and lost frames, so the test
holds the tracker to its job and not the weak model to its (the model's
figures on crossings are in benchmarks/README.md, "Tracking").
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from rtpose.decoder import People
from rtpose.skeleton import COCO
from rtpose.smoothing import OneEuroConfig, OneEuroState, one_euro
from rtpose.synthetic.video import iter_video_frames
from rtpose.track_metrics import DetectionNoise, NoisyDetector, TrackedFrame, clear_mot, truth_frame
from rtpose.tracking import PoseTracker, TrackerConfig, box_iou, greedy_match, oks, pose_similarity

K = COCO.num_keypoints


def standing(x: float, y: float = 100.0, height: float = 120.0, score: float = 0.9) -> np.ndarray:
    """A person's 17 keypoints as a plausible upright figure with its feet at (x, y + height)."""
    rows = np.linspace(0.05, 1.0, K)
    spread = np.where(np.arange(K) % 2, -1, 1) * np.linspace(0.05, 0.2, K)
    return np.stack([x + spread * height, y + rows * height, np.full(K, score)], axis=1).astype(np.float32)


def people(*poses: np.ndarray) -> People:
    kps = np.array(poses, np.float32).reshape(-1, K, 3)
    return People(kps, kps[..., 2].mean(-1) if len(kps) else np.zeros(0, np.float32))


def identities(truth, tracked) -> dict[int, list[int]]:
    """Per true person, the track ids paired with them frame by frame (CLEAR-MOT pairing at OKS 0.5)."""
    figures = clear_mot(truth, tracked, COCO.sigmas, 0.5)
    seen: dict[int, list[int]] = {}
    for pairs, t, h in zip(figures["pairs_per_frame"], truth, tracked):
        for j, g in pairs:
            seen.setdefault(int(t.ids[g]), []).append(int(h.ids[j]))
    return seen


# --- similarity and matching


def test_oks_is_pycocotools_definition():
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    from pycocotools.coco import COCO as CocoApi
    rng = np.random.default_rng(0)
    truth = [standing(100), standing(300, height=80)]
    truth[1][[0, 3, 9], 2] = 0                          # unlabelled keypoints do not count
    truth[0][5, 2] = 1                                  # labelled but hidden ones do
    detections = [truth[0] + np.r_[rng.normal(0, 4, (K, 2)).T, [np.zeros(K)]].T,
                  truth[1] + np.r_[rng.normal(0, 8, (K, 2)).T, [np.zeros(K)]].T,
                  standing(120)]
    detections[2][4] = 0                                # a keypoint not found: (0, 0, 0)
    areas = [5000.0, 2500.0]
    api = CocoApi()
    api.dataset = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "person"}],
                   "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": a,
                                    "bbox": [0, 0, 10, 10], "num_keypoints": int((t[:, 2] > 0).sum()),
                                    "keypoints": np.where(t[:, 2:] > 0, t, 0).ravel().tolist()}
                                   for i, (t, a) in enumerate(zip(truth, areas))]}
    api.createIndex()
    results = api.loadRes([{"image_id": 1, "category_id": 1, "keypoints": d.ravel().tolist(), "score": 1.0 - i / 10}
                           for i, d in enumerate(detections)])
    evaluator = cocoeval.COCOeval(api, results, "keypoints")
    evaluator.params.imgIds = [1]
    evaluator._prepare()
    expected = evaluator.computeOks(1, 1)              # [detections by score, truth]
    got = oks(np.array(truth), np.array(areas), np.array(detections), COCO.sigmas)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # And by hand, one keypoint: exp(-d^2 / (2 * area * (2 sigma)^2)).
    one = np.zeros((1, K, 3), np.float32)
    one[0, 0] = (10, 10, 1)
    moved = one.copy()
    moved[0, 0, 0] += 3
    assert oks(one, np.array([400.0]), moved, COCO.sigmas)[0, 0] == pytest.approx(
        np.exp(-9 / (2 * 400 * (2 * COCO.sigmas[0]) ** 2)), rel=1e-6)


def test_a_fragment_does_not_outscore_the_whole_person():
    whole = standing(100)
    fragment = whole.copy()
    fragment[3:, 2] = 0                                  # three keypoints lying on the person
    areas = np.array([3000.0, 3000.0])
    tracks = np.stack([whole, fragment])
    # pycocotools' OKS (reference = track) cannot tell them apart; the tracker's similarity can.
    assert oks(tracks, areas, whole[None], COCO.sigmas)[0] == pytest.approx([1.0, 1.0])
    similarity = pose_similarity(tracks[None], areas[None], whole[None, None], COCO.sigmas)[0]
    assert similarity[0] == pytest.approx(1.0) and similarity[1] == pytest.approx(3 / K)


def test_greedy_matching_takes_the_most_similar_pair_first():
    similarity = np.array([[0.9, 0.8],
                           [0.85, 0.1]])
    rows, cols = greedy_match(similarity, 0.2)
    assert list(zip(rows, cols)) == [(0, 0)]             # (1, 1) is below the threshold; greedy, not optimal
    rows, cols = greedy_match(similarity, 0.05)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1)]


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 1.0]])


# --- tracks


def test_a_track_survives_missed_frames_and_a_newcomer_gets_a_new_id():
    tracker = PoseTracker(COCO, TrackerConfig(flow=False, max_missed=5))
    ids = []
    for frame in range(20):
        poses = [] if 6 <= frame < 10 else [standing(100 + 3 * frame)]     # hidden for 4 frames
        if frame >= 12:
            poses.append(standing(400 - 2 * frame))                        # someone new
        got, _ = tracker.update(people(*poses), None, frame / 15)
        ids.append(got.tolist())
    walker = {i[0] for f, i in enumerate(ids) if i and not 6 <= f < 10}
    assert walker == {1}, ids                     # back after 4 frames, moved on, and the same id
    assert {i[1] for i in ids[12:]} == {2}         # the newcomer: a new id, kept

    # Gone for longer than max_missed: the track has ended and the person comes back as someone new.
    for frame in range(20, 27):
        tracker.update(people(), None, frame / 15)
    got, _ = tracker.update(people(standing(100 + 3 * 27)), None, 27 / 15)
    assert got.tolist() == [3]


def test_no_people_and_no_image_are_fine():
    tracker = PoseTracker(COCO)
    ids, out = tracker.update(people(), None, 0.0)
    assert ids.shape == (0,) and len(out) == 0
    ids, _ = tracker.update(people(standing(50)), np.zeros((240, 320, 3), np.uint8), 0.1)
    assert ids.tolist() == [1]


@pytest.fixture(scope="module")
def walker_alone():
    """One person walking across 45 frames, as the shipped model sees them (the runtime's own steps)."""
    from rtpose.engine import open_engine
    from rtpose.fast_decoder import decode_outputs
    from rtpose.preprocess import preprocess
    from rtpose.runner import DEFAULT_MODEL
    engine = open_engine(DEFAULT_MODEL, 1)
    frames = []
    for image, persons in iter_video_frames(seed=3, num_frames=45, num_people=1):
        tensor, letterbox = preprocess(image, engine.meta)
        outputs = engine.infer(tensor)
        found = decode_outputs(tuple(o[0] for o in outputs), engine.meta, engine.meta.decoder)
        frames.append((image, persons, found.map_xy(letterbox.to_original)))
    engine.close()
    return frames


def test_a_person_walking_alone_keeps_one_id_for_the_whole_clip(walker_alone):
    tracker = PoseTracker(COCO)
    truth, tracked = [], []
    for frame, (image, persons, found) in enumerate(walker_alone):
        ids, shown = tracker.update(found, image, frame / 15)
        truth.append(truth_frame(persons, K))
        tracked.append(TrackedFrame(shown.keypoints, ids))
    seen = identities(truth, tracked)
    # What the model itself finds (at OKS 0.5; all 45 frames with the shipped model, 40 with the one before)
    found = identities(truth, [TrackedFrame(f.keypoints, np.arange(1, len(f.scores) + 1))
                               for _, _, f in walker_alone])
    assert list(seen) == [1] and len(found[1]) >= 0.8 * len(walker_alone)
    assert len(seen[1]) >= len(found[1]) - 1             # tracked wherever found (smoothing may cost a frame)...
    assert len(set(seen[1])) == 1                        # ...and always under the same id


@pytest.mark.parametrize("flow", [True, False])
def test_two_people_crossing_keep_their_ids(flow):
    # The far walker passes behind the near one, hidden for a few frames; the
    # detector also loses each of them now and then (1-3 frames) and finds false people.
    noise = DetectionNoise(person_drop=0.1, max_drop_frames=3, false_people=0.2)
    detector = NoisyDetector(K, noise, seed=4)
    tracker = PoseTracker(COCO, TrackerConfig(flow=flow))
    truth, tracked, hidden = [], [], 0
    for frame, (image, persons) in enumerate(iter_video_frames(seed=4, num_frames=60, num_people=2)):
        ids, shown = tracker.update(detector(persons), image, frame / 15)
        truth.append(truth_frame(persons, K))
        tracked.append(TrackedFrame(shown.keypoints, ids))
        hidden += int((~truth[-1].counted).any())
    assert hidden >= 2                                   # they do cross, one hiding the other
    seen = identities(truth, tracked)
    assert sorted(seen) == [1, 2]
    for person, ids in seen.items():
        assert len(ids) >= 40, (person, len(ids))
        assert len(set(ids)) == 1, (person, ids)
    assert seen[1][0] != seen[2][0]


def test_smoothed_people_keep_missing_keypoints_missing_and_scores_as_found():
    tracker = PoseTracker(COCO)
    rng = np.random.default_rng(1)
    for frame in range(10):
        pose = standing(100)
        pose[:, :2] += rng.normal(0, 2, (K, 2))
        pose[4] = 0                                       # never found
        if frame % 2:
            pose[7] = 0                                   # found every other frame
        _, out = tracker.update(people(pose), None, frame / 15)
        assert (out.keypoints[0, 4] == 0).all()
        assert (out.keypoints[0, 7] == 0).all() == bool(frame % 2)
        np.testing.assert_array_equal(out.keypoints[0, :, 2], pose[:, 2])


def test_a_new_track_starts_from_its_own_pose():
    tracker = PoseTracker(COCO)
    tracker.update(people(standing(100)), None, 0.0)
    _, out = tracker.update(people(standing(100), standing(400)), None, 1 / 15)
    np.testing.assert_array_equal(out.keypoints[1], standing(400))     # no smoothing from anything before


# --- One-Euro


def run_filter(values: np.ndarray, fps: float, scale: float = 100.0, config: OneEuroConfig = OneEuroConfig()):
    state = OneEuroState.empty((1,))
    out = []
    for i, v in enumerate(values):
        x, state = one_euro(state, np.array([[v, 0.0]]), i / fps, np.array([True]), scale, config)
        out.append(x[0, 0])
    return np.array(out)


def test_one_euro_passes_a_constant_unchanged():
    np.testing.assert_array_equal(run_filter(np.full(50, 123.25), 30), np.full(50, 123.25))


def test_one_euro_reduces_noise_on_a_still_point():
    noise = np.random.default_rng(0).normal(0, 1.5, 300)     # 1.5% of a 100 px person, at 30 FPS
    out = run_filter(100 + noise, 30)
    assert np.std(out[30:] - 100) < 0.6 * np.std(noise[30:])
    assert np.mean(np.abs(np.diff(out, 2))) < 0.3 * np.mean(np.abs(np.diff(noise, 2)))   # jitter


def test_one_euro_follows_a_fast_ramp_with_small_lag():
    fps, speed = 30.0, 200.0                  # px/s: two heights a second of a 100 px person
    t = np.arange(60) / fps
    lag = (speed * t - run_filter(speed * t, fps))[-1]
    step = speed / fps
    assert 0 <= lag < 0.5 * step              # less than half a frame's movement behind
    plain = (speed * t - run_filter(speed * t, fps, config=OneEuroConfig(beta=0.0)))[-1]
    assert plain > 3 * step                   # a plain low-pass at the same rest cutoff trails by frames


def test_one_euro_leaves_unmeasured_points_alone():
    state = OneEuroState.empty((2,))
    x = np.array([[10.0, 10.0], [50.0, 50.0]])
    out, state = one_euro(state, x, 0.0, np.array([True, True]))
    out, state2 = one_euro(state, x + 5, 0.1, np.array([True, False]))
    np.testing.assert_array_equal(out[1], [50.0, 50.0])
    assert state2.time[1] == 0.0 and state2.time[0] == pytest.approx(0.1)


# --- the pipeline and the command line


def rtpose(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "rtpose.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_run_track_writes_an_id_for_every_person_in_every_line(shared_data, tmp_path):
    out = tmp_path / "tracked.jsonl"
    result = rtpose("run", "--source", shared_data / "video" / "vtest.avi", "--track", "--max-frames", 60,
                    "--json", out)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(60))
    assert all(line["smoothed"] is True for line in lines)
    ids = [[p["id"] for p in line["persons"]] for line in lines]
    assert all(len(set(i)) == len(i) == len(line["persons"]) for i, line in zip(ids, lines))
    assert all(isinstance(i, int) and i >= 1 for frame in ids for i in frame)
    # Identities carry over from frame to frame, and some last the whole clip.
    assert all(set(a) & set(b) for a, b in zip(ids, ids[1:]))
    assert set.intersection(*map(set, ids))


def test_tracking_is_asked_for_and_no_smooth_keeps_keypoints_as_decoded(shared_data, tmp_path):
    result = rtpose("run", "--source", shared_data / "video" / "vtest.avi", "--max-frames", 3, "--track",
                    "--no-smooth", "--json", tmp_path / "video.jsonl")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "video.jsonl").read_text().splitlines()]
    assert all(line["smoothed"] is False and all("id" in p for p in line["persons"]) for line in lines)

    result = rtpose("run", "--source", shared_data / "video" / "vtest.avi", "--max-frames", 3,
                    "--json", tmp_path / "untracked.jsonl")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "untracked.jsonl").read_text().splitlines()]
    assert lines and all("smoothed" not in line and all("id" not in p for p in line["persons"]) for line in lines)


def test_pipeline_tracks_each_source_apart_threaded_and_sequential():
    from rtpose.model_meta import ModelMeta
    from rtpose.pipeline import Pipeline, RunOptions
    from rtpose.sources import SourceFrame

    class Walk:
        """A source of blank frames; its 'model output' is a person walking, placed by the fake engine."""
        fps, live, frame_count = 10.0, False, 12

        def __init__(self, name):
            self.name, self.i = name, 0

        def read(self):
            if self.i >= self.frame_count:
                return None
            self.i += 1
            return SourceFrame(np.zeros((64, 64, 3), np.uint8), self.i / self.fps)

        def interrupt(self):
            pass

        def close(self):
            pass

    class Sink:
        def __init__(self):
            self.ids = []

        def write(self, frame):
            self.ids.append(frame.track_ids.tolist())

        def close(self):
            pass

    class Engine:
        meta = ModelMeta(input_width=64, input_height=64)

        def infer(self, batch):
            k, d = K, self.meta.skeleton.num_offset_channels
            return tuple(np.zeros((len(batch), c, 16, 16), np.float32) for c in (k, d, 2 * k))

        def close(self):
            pass

    def decode(batch):      # one person per frame, moving a little
        for f in batch:
            f.people = people(standing(10 + f.index, 5, 40))
            f.outputs = None

    for sequential in (False, True):
        sinks = [Sink(), Sink()]
        pipeline = Pipeline([Walk("a"), Walk("b")], Engine(), [[s] for s in sinks],
                            RunOptions(overlay=False, track=TrackerConfig()))
        pipeline.decode = decode
        frames = pipeline.run_sequential() if sequential else pipeline.run()
        assert len(frames) == 24 and all("track" in f.times for f in frames)
        for sink in sinks:                   # each source has its own tracker: its person is its id 1
            assert sink.ids == [[1]] * 12

    untracked = Pipeline([Walk("a")], Engine(), [[]], RunOptions(overlay=False))
    assert all("track" not in f.times and f.track_ids is None for f in untracked.run())
