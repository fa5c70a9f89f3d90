"""Sources as a user meets them: several at once, a damaged stretch inside a file, a list file."""

import json

import numpy as np

from tests.test_run_cli import count_frames, rtpose


def damage_middle(video, out, nbytes=20000):
    data = bytearray(video.read_bytes())
    start = len(data) // 2
    data[start:start + nbytes] = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


def test_damaged_frames_inside_a_file_are_skipped_and_counted(shared_data, tmp_path):
    video = damage_middle(shared_data / "video/basketball_426x240.mp4", tmp_path / "damaged.mp4")
    result = rtpose("run", "--source", video, "--json", tmp_path / "p.jsonl", "--output", tmp_path / "p.mp4")
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line)["frame"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    skipped = 300 - len(frames)
    assert 0 < skipped < 30 and f"{skipped} damaged frames skipped" in result.stdout
    assert frames[0] == 0 and frames[-1] == 299                 # frame numbers stay the file's
    assert sorted(set(range(300)) - set(frames)) == list(range(frames[np.argmax(np.diff(frames))] + 1,
                                                               frames[np.argmax(np.diff(frames)) + 1]))
    assert count_frames(tmp_path / "p.mp4")[0] == len(frames)


def test_several_sources_write_their_own_outputs(shared_data, tmp_path):
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# two sources\n{shared_data / 'video/basketball_426x240.mp4'}\n{shared_data / 'coco'}\n")
    images = sorted(p.name for p in (shared_data / "coco").rglob("*.jpg") if p.parent == shared_data / "coco")
    result = rtpose("run", "--source", listing, "--json", tmp_path / "poses.jsonl",
                    "--output", tmp_path / "poses.mp4", "--max-batch", "2")
    assert result.returncode == 0, result.stderr
    video_lines = (tmp_path / "poses.0.jsonl").read_text().splitlines()
    image_lines = [json.loads(line) for line in (tmp_path / "poses.1.jsonl").read_text().splitlines()]
    assert len(video_lines) == 300 and count_frames(tmp_path / "poses.0.mp4")[0] == 300
    assert [line["image"] for line in image_lines] == images
    assert "basketball_426x240.mp4: 300 frames written" in result.stdout
