"""Pose tracking against ground-truth identities, and what tracking costs per frame.

Synthetic videos (``rtpose.synthetic.video``: walkers crossing at different
depths, one turning, one waving, more walkers at random depths, so people
cross and hide each other) give every person's keypoints and identity in
every frame. Two detectors feed the tracker:

- ``model``: the shipped model (``rtpose/models/default.onnx``) through the
  runtime's preprocess and decoder, as ``rtpose run`` does;
- ``noisy``: the ground truth with noise, lost keypoints, lost people and
  false people (``rtpose.track_metrics.DetectionNoise``), to show the tracker
  apart from a weak detector.

The shipped model's decoder keeps people down to a score of 0.05, so it
reports about nine fragments a frame besides the real people; it is run as
shipped and with ``--person-threshold 0.3`` (``--model-thresholds``).

Trackers: without/with optical flow x without/with One-Euro smoothing (all
with the velocity guess), and the plain baseline: last poses where they
were, no flow, no velocity. Each at the video's 15 FPS and on every third
frame (``--steps 1 3``: 5 FPS, or a live source dropping two frames in
three), which triples the motion between frames.

Figures (``rtpose.track_metrics``): CLEAR-MOT misses, false positives,
identity switches and MOTA with OKS >= ``--oks`` pairing, track ids that
never paired with a person (false tracks), people mostly tracked / mostly
lost, keypoint jitter (mean second difference, px) beside the ground truth's
own, and the mean keypoint error against the ground truth.

Cost: the default tracker (flow and smoothing) on noisy ground truth of
videos with 10 and 30 people, median milliseconds of ``PoseTracker.update``
per frame, on one thread (pin the process to a core: ``taskset -c 0``).

    taskset -c 0 python benchmarks/track_bench.py --json track_bench.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run from a checkout, installed or not

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from rtpose.decoder import People  # noqa: E402
from rtpose.runner import cpu_name  # noqa: E402
from rtpose.skeleton import COCO  # noqa: E402
from rtpose.synthetic.video import iter_video_frames  # noqa: E402
from rtpose.track_metrics import (DetectionNoise, NoisyDetector, TrackedFrame, clear_mot, keypoint_jitter,  # noqa: E402
                                  truth_frame)
from rtpose.tracking import PoseTracker, TrackerConfig  # noqa: E402

DEFAULT_MODEL = ROOT / "rtpose" / "models" / "default.onnx"
VARIANTS = {
    "last pose, raw": TrackerConfig(flow=False, velocity=False, smoothing=None),
    "no flow, raw": TrackerConfig(flow=False, smoothing=None),
    "flow, raw": TrackerConfig(smoothing=None),
    "no flow, smoothed": TrackerConfig(flow=False),
    "flow, smoothed": TrackerConfig(),
}
SUMMED = ("frames", "people_counted", "pairs", "misses", "false_positives", "id_switches", "identities",
          "mostly_tracked", "mostly_lost", "track_ids", "false_tracks")


def model_detector(model: Path):
    """The runtime's preprocess, inference and decoder, as ``rtpose run`` runs them, at the model's defaults."""
    from rtpose.engine import open_engine
    from rtpose.fast_decoder import decode_outputs
    from rtpose.preprocess import preprocess
    engine = open_engine(model, 1)
    meta = engine.meta

    def detect(image):
        tensor, letterbox = preprocess(image, meta)
        outputs = engine.infer(tensor)
        return decode_outputs(tuple(o[0] for o in outputs), meta, meta.decoder).map_xy(letterbox.to_original)
    return detect


def above(people: People, threshold: float) -> People:
    """Only the people scoring ``threshold`` or more: the decoder's ``person_threshold`` raised."""
    keep = people.scores >= threshold
    return People(people.keypoints[keep], people.scores[keep])


def make_video(seed: int, args) -> tuple[list[np.ndarray], list[list[dict]]]:
    images, persons = [], []
    for image, people in iter_video_frames(seed, args.frames, args.width, args.height, args.fps, args.people):
        images.append(image)
        persons.append(people)
    return images, persons


def track(images, detections, timestamps, config: TrackerConfig) -> tuple[list[TrackedFrame], list[float]]:
    """Tracked frames, and the CPU seconds of this thread each update took.

    CPU time rather than wall time: the machine is shared, and a process
    waiting for its core is not tracking.
    """
    tracker = PoseTracker(COCO, config)
    out, seconds = [], []
    for image, people, t in zip(images, detections, timestamps):
        started = time.thread_time()
        ids, shown = tracker.update(people, image, t)
        seconds.append(time.thread_time() - started)
        out.append(TrackedFrame(np.asarray(shown.keypoints), ids))
    return out, seconds


def accuracy(args) -> dict:
    """Per detector, step and tracker: figures summed over the videos (and per video under ``per_video``)."""
    detect = model_detector(args.model) if "model" in args.detectors else None
    names = [f"model@{t:g}" for t in args.model_thresholds] if detect else []
    names += ["noisy"] if "noisy" in args.detectors else []
    runs: dict = {n: {step: {v: [] for v in VARIANTS} for step in args.steps} for n in names}
    for seed in args.seeds:
        images, persons = make_video(seed, args)
        found = {}
        if detect:
            raw = [detect(im) for im in images]
            found.update({f"model@{t:g}": [above(p, t) for p in raw] for t in args.model_thresholds})
        if "noisy" in args.detectors:
            noisy = NoisyDetector(COCO.num_keypoints, replace(DetectionNoise(), min_visible=args.min_visible),
                                  seed=seed, size=(args.width, args.height))
            found["noisy"] = [noisy(p) for p in persons]
        for step in args.steps:
            frames = range(0, len(images), step)
            truth = [truth_frame(persons[i], COCO.num_keypoints, args.min_visible) for i in frames]
            timestamps = [i / args.fps for i in frames]
            for name, detections in found.items():
                for variant, config in VARIANTS.items():
                    tracked, _ = track([images[i] for i in frames], [detections[i] for i in frames], timestamps,
                                       config)
                    mot = clear_mot(truth, tracked, COCO.sigmas, args.oks)
                    jitter = keypoint_jitter(truth, tracked, mot.pop("pairs_per_frame"))
                    runs[name][step][variant].append({"seed": seed, **mot, **jitter})
                    print(f"seed {seed} step {step} {name:9s} {variant:18s} switches {mot['id_switches']:3d} "
                          f"MOTA {mot['mota']:.3f} jitter {jitter['jitter_px']:.2f} "
                          f"(truth {jitter['truth_jitter_px']:.2f}) error {jitter['error_px']:.2f}", file=sys.stderr)
    totals = {n: {str(step): {v: total(r) for v, r in variants.items()} for step, variants in by_step.items()}
              for n, by_step in runs.items()}
    return {"totals": totals, "per_video": runs}


def total(runs: list[dict]) -> dict:
    out = {k: sum(r[k] for r in runs) for k in SUMMED}
    out["mota"] = 1 - (out["misses"] + out["false_positives"] + out["id_switches"]) / out["people_counted"]
    points = sum(r["points"] for r in runs)
    out["jitter_points"] = points
    for k in ("jitter_px", "truth_jitter_px"):
        out[k] = sum(r[k] * r["points"] for r in runs if r["points"]) / max(points, 1)
    out["error_px"] = sum(r["error_px"] * r["pairs"] for r in runs) / max(1, out["pairs"])
    out["motp_oks"] = sum(r["motp_oks"] * r["pairs"] for r in runs) / max(1, out["pairs"])
    return out


COST_VARIANTS = {
    "flow, smoothed (default)": TrackerConfig(),
    "flow, raw": TrackerConfig(smoothing=None),
    "no flow, smoothed": TrackerConfig(flow=False),
    "no flow, raw": TrackerConfig(flow=False, smoothing=None),
}


def exactly(people: People, count: int, rng: np.random.Generator, size: tuple[int, int]) -> People:
    """``count`` people: the first ``count``, or copies of them shifted elsewhere in the frame to make up."""
    keypoints = list(people.keypoints[:count])
    while len(keypoints) < count and len(people):
        copy = people.keypoints[len(keypoints) % len(people)].copy()
        found = copy[:, 2] > 0
        copy[found, :2] = (copy[found, :2] + rng.uniform(0, 1, 2) * size) % size
        keypoints.append(copy)
    kps = np.array(keypoints, np.float32)
    return People(kps, kps[..., 2].mean(-1))


def timings(images, detections, timestamps, repeats: int) -> dict:
    row = {"people_per_frame": float(np.mean([len(d) for d in detections]))}
    for variant, config in COST_VARIANTS.items():
        runs = [track(images, detections, timestamps, config)[1][1:] for _ in range(repeats)]
        ms = 1000 * np.concatenate(runs)
        row[variant] = {"median_ms": round(float(np.median(ms)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}
    return row


def cost(args) -> dict:
    """CPU ms per frame of ``PoseTracker.update``: the default, and without flow and/or smoothing.

    N people: every person's labelled keypoints with noise on the rendered
    video's frames (for the flow), no one dropped and no false people, made up
    to exactly N a frame by shifted copies where people hide each other.
    The cost video: the shipped model's people on its first frames, as ``rtpose run`` would track them.
    """
    cv2.setNumThreads(1)
    figures = {}
    everyone = DetectionNoise(keypoint_drop=0.0, occluded_found=1.0, person_drop=0.0, false_people=0.0,
                              min_visible=0)
    for count in args.cost_people:
        frames = list(iter_video_frames(args.seeds[0], args.cost_frames, args.cost_width, args.cost_height,
                                        args.fps, count))
        noisy = NoisyDetector(COCO.num_keypoints, everyone, seed=1, size=(args.cost_width, args.cost_height))
        rng = np.random.default_rng(count)
        detections = [exactly(noisy(p), count, rng, (args.cost_width, args.cost_height)) for _, p in frames]
        figures[f"{count} people"] = row = timings([im for im, _ in frames], detections,
                                                   [i / args.fps for i in range(len(frames))], args.cost_repeats)
        print(f"{count} people: {row}", file=sys.stderr)
    if args.cost_video and args.cost_video.is_file():
        detect = model_detector(args.model)
        capture = cv2.VideoCapture(str(args.cost_video))
        fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
        images = []
        while len(images) < args.cost_frames * 2:
            ok, image = capture.read()
            if not ok:
                break
            images.append(image)
        capture.release()
        detections = [detect(im) for im in images]
        figures[args.cost_video.name] = row = timings(images, detections, [i / fps for i in range(len(images))],
                                                      args.cost_repeats)
        print(f"{args.cost_video.name}: {row}", file=sys.stderr)
    return figures


def format_report(report: dict) -> str:
    lines = []
    for name, by_step in report.get("accuracy", {}).get("totals", {}).items():
        for step, variants in by_step.items():
            first = next(iter(variants.values()))
            lines += ["",
                      (f"detector {name}, every {step} frame(s): {first['people_counted']} people counted "
                       f"over {first['frames']} frames, {first['identities']} identities"),
                      (f"{'tracker':20s}{'switches':>9s}{'misses':>8s}{'false+':>8s}{'MOTA':>8s}{'ids':>6s}"
                       f"{'false tr':>9s}{'MT/ML':>7s}{'jitter':>8s}{'truth':>7s}{'error':>7s}")]
            for variant, r in variants.items():
                lines.append(f"{variant:20s}{r['id_switches']:9d}{r['misses']:8d}{r['false_positives']:8d}"
                             f"{r['mota']:8.3f}{r['track_ids']:6d}{r['false_tracks']:9d}"
                             f"{r['mostly_tracked']:>4d}/{r['mostly_lost']:<2d}{r['jitter_px']:8.2f}"
                             f"{r['truth_jitter_px']:7.2f}{r['error_px']:7.2f}")
    if "cost" in report:
        lines += ["", "tracking cost per frame (CPU ms of one thread, median / p95)"]
        for what, row in report["cost"].items():
            parts = "; ".join(f"{v} {f['median_ms']:.2f} / {f['p95_ms']:.2f}"
                              for v, f in row.items() if v != "people_per_frame")
            lines.append(f"{what} ({row['people_per_frame']:.1f} a frame): {parts}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 9)), help="one video per seed")
    parser.add_argument("--people", type=int, default=6)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--min-visible", type=int, default=5, help="visible keypoints a person needs to count")
    parser.add_argument("--oks", type=float, default=0.5, help="OKS a tracked pose needs to pair with a person")
    parser.add_argument("--detectors", nargs="+", default=["model", "noisy"], choices=["model", "noisy"])
    parser.add_argument("--model-thresholds", type=float, nargs="+", default=[0.05, 0.3],
                        help="person score thresholds the model's people are cut at (0.05: as shipped)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 3], help="track every N-th frame")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--cost-people", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--cost-frames", type=int, default=60)
    parser.add_argument("--cost-width", type=int, default=768, help="as vtest.avi")
    parser.add_argument("--cost-height", type=int, default=576)
    parser.add_argument("--cost-repeats", type=int, default=5)
    parser.add_argument("--cost-video", type=Path, default=ROOT.parent / "shared" / "data" / "video" / "vtest.avi",
                        help="also time tracking of the shipped model's people on this video's first frames")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    report = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                         "numpy": np.__version__, "opencv": cv2.__version__},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "tracker": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v)
                          for k, v in asdict(TrackerConfig()).items()},
              "noise": asdict(DetectionNoise())}
    if not args.skip_accuracy:
        report["accuracy"] = accuracy(args)
    if not args.skip_cost:
        report["cost"] = cost(args)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
