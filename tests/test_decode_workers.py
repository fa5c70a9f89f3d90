"""Decoding in worker processes (``--decode-processes``): the same people, errors that end the run, nothing left."""

import json
import re
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from rtpose.cli import app
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.pipeline import Pipeline, RunOptions
from rtpose.runner import DEFAULT_MODEL
from rtpose.sources import open_source
from tests.test_pipeline import RecordingSink, run_with_timeout

runner = CliRunner()
SHM = Path("/dev/shm")


def shared_blocks() -> set[str]:
    """Python's shared memory blocks (named psm_...) now on this machine."""
    return set(p.name for p in SHM.glob("psm_*")) if SHM.is_dir() else set()


def by_frame(path: Path) -> dict:
    """A JSON-lines file's people, by frame number, in the file's order."""
    return {line["frame"]: line["persons"] for line in map(json.loads, path.read_text().splitlines())}


def test_worker_processes_find_the_same_people_in_the_same_order(shared_data, tmp_path):
    video = shared_data / "video" / "vtest.avi"
    before = shared_blocks()
    for n in (0, 2):
        result = runner.invoke(app, ["run", "--source", str(video), "--max-frames", "40", "--json",
                                     str(tmp_path / f"p{n}.jsonl"), "--decode-processes", str(n)])
        assert result.exit_code == 0, result.output
    in_thread, in_workers = by_frame(tmp_path / "p0.jsonl"), by_frame(tmp_path / "p2.jsonl")
    assert len(in_thread) == 40 and sum(map(len, in_thread.values())) > 200   # vtest.avi's crowd, frame by frame
    assert list(in_workers.items()) == list(in_thread.items())             # same frames, order and people
    assert shared_blocks() <= before                                       # the shared memory was freed


def test_two_sources_batched_together_keep_their_people_apart(shared_data, tmp_path):
    videos = [shared_data / "video" / "vtest.avi", shared_data / "video" / "basketball_426x240.mp4"]
    sources = [arg for v in videos for arg in ("--source", str(v))]
    for n in (0, 2):
        result = runner.invoke(app, ["run", *sources, "--max-frames", "40", "--max-batch", "2", "--json",
                                     str(tmp_path / f"p{n}.jsonl"), "--decode-processes", str(n)])
        assert result.exit_code == 0, result.output
    for i in (0, 1):                      # p0.0.jsonl, p0.1.jsonl: one file per source
        # --max-frames counts both sources' frames, so each run may take a few more of one or the other.
        in_thread, in_workers = by_frame(tmp_path / f"p0.{i}.jsonl"), by_frame(tmp_path / f"p2.{i}.jsonl")
        both = in_thread.keys() & in_workers.keys()
        assert len(both) >= 15 and all(in_workers[k] == in_thread[k] for k in both)


class MisfitEngine(OnnxRuntimeEngine):
    """The shipped model with one heatmap channel dropped: outputs that do not fit its skeleton."""

    def infer(self, batch):
        heatmaps, *rest = super().infer(batch)
        return (np.ascontiguousarray(heatmaps[:, 1:]), *rest)


def test_a_decoding_error_in_a_worker_ends_the_run_with_it_and_closes_the_sinks(shared_data):
    before = shared_blocks()
    source = open_source(str(shared_data / "video" / "basketball_426x240.mp4"))
    sink = RecordingSink()
    pipeline = Pipeline([source], MisfitEngine(DEFAULT_MODEL), [[sink]],
                        RunOptions(decode_processes=1, render=True))
    result = run_with_timeout(pipeline, seconds=60)
    assert isinstance(result.get("error"), ValueError)
    assert "do not fit skeleton coco" in str(result["error"])
    assert sink.closed
    assert shared_blocks() <= before


def test_a_negative_count_is_one_line(shared_data):
    result = runner.invoke(app, ["run", "--source", str(shared_data / "video" / "vtest.avi"),
                                 "--decode-processes", "-1"])
    assert result.exit_code == 1
    assert "--decode-processes must be 0 (decode in the pipeline's thread) or more" in result.output


def test_bench_measures_the_pipeline_with_worker_processes(shared_data):
    result = runner.invoke(app, ["bench", "--source", str(shared_data / "video" / "basketball_426x240.mp4"),
                                 "--frames", "30", "--decode-processes", "1"])
    assert result.exit_code == 0, result.output
    assert "threads: 5 pipeline stages, 1 decode processes;" in result.output
    assert re.search(r"^pipeline \(threads\) +30 ", result.output, re.M)
