"""A real stream on loopback: ffmpeg serves a real video over TCP at a real pace while rtpose consumes it.

ffmpeg comes from the Debian package (``.ci/run`` installs it).
"""

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from rtpose.runner import DEFAULT_MODEL, Outputs, run
from rtpose.sources import Reconnect
from tests.test_run_cli import assert_one_line_error, count_frames, rtpose

if shutil.which("ffmpeg") is None:
    if os.environ.get("RTPOSE_REQUIRE_FFMPEG"):
        raise RuntimeError("ffmpeg is required for the live-stream tests (apt-get install ffmpeg)")
    pytest.skip("ffmpeg not installed (apt-get install ffmpeg)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether a socket listens on the port (read from /proc: a test connection would be the server's one client)."""
    rows = open("/proc/net/tcp").read().splitlines()[1:]
    return any(row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A" for row in rows)


def serve(video, port, speed=4.0, loops=1) -> subprocess.Popen:
    """ffmpeg as a one-client TCP server sending MPEG-TS at ``speed`` x the video's own frame rate."""
    server = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-readrate", str(speed), "-stream_loop", str(loops),
         "-i", str(video), "-c", "copy", "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"],
        stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not listening(port) and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return server


def test_stream_stays_current_and_survives_its_server_restarting(shared_data, tmp_path):
    # 600 frames at 120 FPS, twice, with a gap between: the pipeline (about 40
    # FPS on 2 cores) cannot keep up, so the latest-frame policy must drop.
    video, port = shared_data / "video/basketball_426x240.mp4", free_port()
    first = serve(video, port)

    def restart_after_first():
        first.wait()
        time.sleep(0.5)
        restart.append(serve(video, port))
    restart: list = []
    threading.Thread(target=restart_after_first, daemon=True).start()
    try:
        result = rtpose("run", "--source", f"tcp://127.0.0.1:{port}", "--json", tmp_path / "poses.jsonl",
                        "--output", tmp_path / "poses.mp4", "--reconnect-timeout", "3", timeout=120)
    finally:
        for server in [first, *restart]:
            server.kill()
    # The server never comes back after its second run: the run ends with one clear line.
    assert_one_line_error(result, "did not come back within 3 s")
    assert "reconnected after 1 drop(s)" in result.stdout and "dropped (newest frame kept)" in result.stdout
    assert "every frame kept" not in result.stdout
    lines = [json.loads(line) for line in (tmp_path / "poses.jsonl").read_text().splitlines()]
    assert len(lines) > 200
    latency = np.array([line["latency_ms"] for line in lines])
    assert np.median(latency[-100:]) < 2 * np.median(latency[:100]) + 20      # no growth over time
    gaps = np.diff([line["timestamp"] for line in lines])
    restart_at = int(np.argmax(gaps))
    assert gaps[restart_at] > 0.4 and 50 < restart_at < len(lines) - 50     # frames on both sides of the restart
    assert count_frames(tmp_path / "poses.mp4")[0] == len(lines)            # finalised, playable


def test_a_stalled_stream_is_given_up_with_a_message_and_outputs_finalised(shared_data, tmp_path):
    port = free_port()
    server = serve(shared_data / "video/basketball_426x240.mp4", port, speed=1.0)
    outcome: dict = {}

    def consume():
        outcome["summary"] = run(f"tcp://127.0.0.1:{port}", DEFAULT_MODEL, Outputs(json_lines=tmp_path / "p.jsonl"),
                                 progress=False, reconnect=Reconnect(give_up_after=1.5, read_timeout=1.0))
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        time.sleep(2.5)
        server.send_signal(19)               # SIGSTOP: the connection stays open, nothing more arrives
        stalled_at = time.monotonic()
        consumer.join(30)
        assert not consumer.is_alive(), "the run hung on a stalled stream"
        assert time.monotonic() - stalled_at < 15
    finally:
        server.send_signal(18)
        server.kill()
    summary = outcome["summary"]
    assert "did not come back" in summary["error"]
    assert 0 < summary["frames"] == len((tmp_path / "p.jsonl").read_text().splitlines())


def test_a_stream_that_is_not_there(tmp_path):
    result = rtpose("run", "--source", f"tcp://127.0.0.1:{free_port()}", "--json", tmp_path / "p.jsonl")
    assert_one_line_error(result, "did not open (is the server up")


def test_bench_measures_a_live_stream(shared_data, tmp_path):
    port = free_port()
    server = serve(shared_data / "video/basketball_426x240.mp4", port, speed=2.0)
    try:
        result = rtpose("bench", "--source", f"tcp://127.0.0.1:{port}", "--frames", "80", "--json",
                        tmp_path / "bench.json", timeout=120)
    finally:
        server.kill()
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["pipeline"]["frames"] == 80 and "sequential" not in report
    assert report["pipeline"]["sources"][0]["policy"] == "latest"
    assert report["engine_only"]["frames"] > 0 and report["latency_p95_vs_inference_plus_decode"] > 0
