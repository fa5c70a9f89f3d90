"""The CUDA paths, on a real GPU: skipped where torch sees none (CI has none).

Run them on a machine with an NVIDIA GPU: ``pytest tests/test_gpu.py``.
What they cover:

- the torch engine (``.pt2``) on CUDA, in float32 (against onnxruntime on the
  CPU for the same checkpoint), float16 and with CUDA graphs;
- ``rtpose run`` and ``rtpose bench`` with ``--fp16 --cuda-graphs``;
- the TensorRT engine's own code (device and pinned buffers, copies, the
  stream) on real cuda-python, with TensorRT itself faked (``fakes.real_cuda``);
- training on CUDA with float16 autocast and the GradScaler, a checkpoint
  that a CPU-only machine loads, and resume.
"""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import fakes
from rtpose.cli import app
from rtpose.engine import open_engine
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.engine.torch_engine import TorchEngine
from rtpose.runner import DEFAULT_MODEL
from rtpose.synthetic.scene import SceneConfig, write_dataset
from tests.conftest import TINY_MODEL
# exported: a tiny checkpoint (128x96) exported to ONNX and to a .pt2 for batches up to 4.
from tests.test_torch_engine import batch_of, exported  # noqa: F401 - exported is a fixture
from trainer.checkpoint import CheckpointEngine, read_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")
runner = CliRunner()


def spread(outputs):
    return [float(o.max() - o.min()) for o in outputs]


def test_cuda_float32_matches_onnxruntime_on_the_cpu(exported, real_images):
    reference = OnnxRuntimeEngine(exported / "tiny.onnx")
    engine = TorchEngine.from_file(exported / "tiny.pt2")
    assert engine.device.type == "cuda" and engine.channels_last      # the defaults on a GPU
    for n in (1, 3):
        batch = batch_of(real_images[:n], engine.meta)
        got, expected = engine.infer(batch), reference.infer(batch)
        for a, b, size in zip(got, expected, spread(expected)):
            assert a.dtype == b.dtype and a.shape == b.shape and a.flags["C_CONTIGUOUS"]
            # cuDNN may convolve in TF32 (10-bit mantissa): close, not equal.
            assert np.abs(a.astype(np.float64) - b).max() <= 2e-3 * max(size, 1.0)


def test_float16_stays_close_to_float32(exported, real_images):
    full = TorchEngine.from_file(exported / "tiny.pt2")
    half = TorchEngine.from_file(exported / "tiny.pt2", fp16=True)
    batch = batch_of(real_images[:2], full.meta)
    expected = full.infer(batch)
    for a, b, size in zip(half.infer(batch), expected, spread(expected)):
        assert a.dtype == b.dtype == np.float32 and np.isfinite(a).all()     # half precision comes back as float32
        assert np.abs(a.astype(np.float64) - b).max() <= 2e-2 * max(size, 1.0)


def test_cuda_graphs_replay_what_the_module_computes_for_each_batch_size(exported, real_images):
    eager = TorchEngine.from_file(exported / "tiny.pt2")
    graphs = TorchEngine.from_file(exported / "tiny.pt2", cuda_graphs=True)
    results = []
    for n in (1, 2, 1, 2):                  # the second 1 and 2 replay graphs captured before
        batch = batch_of([real_images[(n + i + len(results)) % len(real_images)] for i in range(n)], eager.meta)
        got, expected = graphs.infer(batch), eager.infer(batch)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        results.append((got, expected))
    assert len(graphs._graphs) == 2
    for got, expected in results:           # earlier results are copies, not the graph's reused outputs
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_run_and_bench_on_cuda_with_fp16_and_graphs(exported, shared_data, tmp_path):
    video = shared_data / "video" / "vtest.avi"
    out = tmp_path / "poses.jsonl"
    result = runner.invoke(app, ["run", "--source", str(video), "--model", str(exported / "tiny.pt2"), "--fp16",
                                 "--cuda-graphs", "--max-frames", "30", "--json", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 30
    bench = runner.invoke(app, ["bench", "--source", str(video), "--model", str(exported / "tiny.pt2"), "--fp16",
                                "--cuda-graphs", "--frames", "60"])
    assert bench.exit_code == 0, bench.output
    assert "cuda" in bench.output and "fp16" in bench.output and "cuda-graphs" in bench.output


def test_tensorrt_engine_buffers_copies_and_stream_on_real_cuda(monkeypatch, tmp_path, coco_crowdpose_images):
    pytest.importorskip("cuda.bindings.runtime")
    fakes.install(monkeypatch, real_cuda=True)
    try:
        from export.tensorrt_build import export_tensorrt
        from fakes import real_cuda
        path, parity = export_tensorrt(DEFAULT_MODEL, tmp_path / "default_b4.engine", max_batch=4)
        assert "max |diff| heatmaps 0.00e+00" in parity
        reference = OnnxRuntimeEngine(DEFAULT_MODEL)
        free_before = real_cuda.free_device_bytes()
        engine = open_engine(path)
        assert type(engine).__name__ == "TensorRTEngine"
        assert real_cuda.free_device_bytes() < free_before               # buffers on the GPU
        photos = coco_crowdpose_images
        for n in (1, 4, 2):
            images = [photos[(n + i) % len(photos)] for i in range(n)]
            got = engine.infer(batch_of(images, engine.meta))           # uint8 pixels up, outputs down
            expected = reference.infer(batch_of(images, reference.meta))
            for a, b in zip(got, expected):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        engine.close()
        engine.close()
        assert real_cuda.free_device_bytes() >= free_before - (2 << 20)  # given back (driver pages aside)
    finally:
        fakes.uninstall_users()


def test_training_on_cuda_with_float16_gives_a_checkpoint_a_cpu_loads(tmp_path):
    scene = SceneConfig(width=128, height=96, min_people=1, max_people=2)
    write_dataset(tmp_path / "train", 16, seed=1, config=scene)
    write_dataset(tmp_path / "val", 4, seed=2, config=scene)
    config = tmp_path / "exp.yaml"
    config.write_text(f"train_annotations: {tmp_path / 'train/annotations.json'}\n"
                      f"val_annotations: {tmp_path / 'val/annotations.json'}\n"
                      f"output_dir: {tmp_path / 'run'}\n" + TINY_MODEL +
                      "epochs: 2\nbatch_size: 4\nworkers: 0\namp: true\ncompile_loss: true\n")
    result = runner.invoke(app, ["train", str(config), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "on cuda" in result.output
    ckpt = read_checkpoint(tmp_path / "run/last.pt")
    assert ckpt["epoch"] == 1 and "scaler" in ckpt
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())
    on_cpu = CheckpointEngine.from_file(tmp_path / "run/last.pt", device="cpu")
    outputs = on_cpu.infer(np.zeros((1, 3, 96, 128), np.float32))
    assert all(np.isfinite(o).all() for o in outputs)
    again = runner.invoke(app, ["train", str(config), "--resume", str(tmp_path / "run/last.pt")])
    assert again.exit_code == 0, again.output
    assert read_checkpoint(tmp_path / "run/last.pt")["epoch"] == 2
