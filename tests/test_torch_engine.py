"""The torch engine on CPU: an exported .pt2 gives what onnxruntime gives for the same checkpoint.

The CUDA, FP16 and CUDA-graph paths are tests/test_gpu.py's (they need a GPU);
here, their refusal on a CPU.
"""

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rtpose.cli import app
from rtpose.engine import EngineError, open_engine
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.engine.torch_engine import TorchEngine
from rtpose.preprocess import preprocess
from rtpose.skeleton import COCO
from trainer.checkpoint import CheckpointEngine, load_model, save_checkpoint
from trainer.config import TrainConfig
from trainer.model import SimplePoseNet

runner = CliRunner()


def write_tiny_checkpoint(path):
    """A small untrained model at 128x96, with batch-norm statistics that are not the defaults."""
    config = TrainConfig(train_annotations="unused.json", input_width=128, input_height=96,
                         widths=(8, 8, 16, 16, 16), neck_width=16, head_width=16)
    torch.manual_seed(0)
    model = SimplePoseNet(COCO, config.model_config())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(path, model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1), 0, config,
                    config.model_meta(COCO), {})
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch_engine")
    ckpt = write_tiny_checkpoint(root / "tiny.pt")
    for fmt, name, extra in (("onnx", "tiny.onnx", []), ("torch", "tiny.pt2", ["--max-batch", "4"])):
        result = runner.invoke(app, ["export", str(ckpt), "--format", fmt, "--output", str(root / name), *extra])
        assert result.exit_code == 0, result.output
        assert "parity:" in result.output
    return root


@pytest.fixture(scope="module")
def real_images(shared_data):
    images = [cv2.imread(str(p)) for p in sorted((shared_data / "coco").glob("*.jpg"))]
    assert len(images) == 4 and all(im is not None for im in images)
    return images


def batch_of(images, meta):
    return np.concatenate([preprocess(im, meta)[0] for im in images])


def test_torch_program_matches_onnxruntime_on_real_images(exported, real_images):
    engine = open_engine(exported / "tiny.pt2")
    assert isinstance(engine, TorchEngine) and engine.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    engine = TorchEngine.from_file(exported / "tiny.pt2", device="cpu")     # parity with onnxruntime: on the CPU
    assert engine.max_batch == 4                          # read back from the program's guards
    reference = OnnxRuntimeEngine(exported / "tiny.onnx")
    assert engine.meta == replace(reference.meta, versions=engine.meta.versions)   # one metadata, two files
    for images in (real_images[:1], real_images[1:4]):    # batch 1 and 3 through the same dynamic program
        batch = batch_of(images, engine.meta)
        got, expected = engine.infer(batch), reference.infer(batch)
        assert [o.shape for o in got] == [(len(images), 17, 24, 32), (len(images), COCO.num_offset_channels, 24, 32),
                                          (len(images), 34, 24, 32)]
        assert all(o.dtype == np.float32 for o in got)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, atol=1e-4)
    engine.close()


def test_checkpoint_engine_is_the_torch_engine_over_the_trainers_model(exported, real_images):
    checkpoint = CheckpointEngine.from_file(exported / "tiny.pt", device="cpu")
    assert isinstance(checkpoint, TorchEngine)
    program = TorchEngine.from_file(exported / "tiny.pt2", device="cpu")
    batch = batch_of(real_images[:2], program.meta)
    for a, b in zip(checkpoint.infer(batch), program.infer(batch)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Made from a live model (validation while training), it stays on that model's device, weights untouched.
    model, meta, _ = load_model(exported / "tiny.pt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    live = CheckpointEngine(model, meta)
    live.infer(batch)
    assert live.device == next(model.parameters()).device and not live.channels_last
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_channels_last_layout_gives_the_same_outputs_on_cpu(exported, real_images):
    plain = TorchEngine.from_file(exported / "tiny.pt2", device="cpu", channels_last=False)
    nhwc = TorchEngine.from_file(exported / "tiny.pt2", device="cpu", channels_last=True)
    batch = batch_of(real_images[:2], plain.meta)
    for a, b in zip(plain.infer(batch), nhwc.infer(batch)):
        np.testing.assert_allclose(a, b, atol=1e-5)
        assert b.flags["C_CONTIGUOUS"]          # NCHW order on the host, whatever the layout inside


def test_bad_input_and_cuda_only_options_are_clear_errors(exported):
    engine = TorchEngine.from_file(exported / "tiny.pt2", device="cpu")
    with pytest.raises(EngineError, match="outside this model's range 1..4"):
        engine.infer(np.zeros((5, 3, 96, 128), np.float32))
    with pytest.raises(EngineError, match="takes float32"):
        engine.infer(np.zeros((1, 96, 128, 3), np.uint8))
    with pytest.raises(EngineError, match="fp16 runs only on a CUDA device"):
        TorchEngine.from_file(exported / "tiny.pt2", device="cpu", fp16=True)
    with pytest.raises(EngineError, match="CUDA graphs need a CUDA device"):
        TorchEngine.from_file(exported / "tiny.pt2", device="cpu", cuda_graphs=True)


def test_runtime_refuses_files_it_cannot_run_with_the_command_that_makes_one(exported, tmp_path):
    with pytest.raises(EngineError, match=r"training checkpoint.*rtpose export .*tiny\.pt"):
        open_engine(exported / "tiny.pt")
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(EngineError, match="not a torch.export program"):
        open_engine(junk)
    bare = tmp_path / "bare.pt2"                          # a real program, but not rtpose's: no metadata inside
    torch.export.save(torch.export.export(torch.nn.ReLU(), (torch.zeros(1),)), str(bare))
    with pytest.raises(EngineError, match="not an rtpose model .*--format torch"):
        open_engine(bare)


def test_export_refuses_a_suffix_the_runtime_would_not_recognise(exported):
    result = runner.invoke(app, ["export", str(exported / "tiny.pt"), "--format", "torch",
                                 "--output", str(exported / "tiny.onnx")])
    assert result.exit_code == 1 and "--format torch writes .pt2 files" in result.output
    result = runner.invoke(app, ["export", str(exported / "tiny.pt"), "--format", "torch", "--opset", "18",
                                 "--output", str(exported / "x.pt2")])
    assert result.exit_code == 1 and "does not take --opset" in result.output


def test_run_takes_a_torch_program_and_names_the_cuda_only_options(exported, shared_data, tmp_path):
    video = shared_data / "video/basketball_426x240.mp4"
    result = runner.invoke(app, ["run", "--source", str(video), "--model", str(exported / "tiny.pt2"),
                                 "--max-frames", "3", "--json", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 3
    if not torch.cuda.is_available():                    # on a GPU, tests/test_gpu.py runs it
        result = runner.invoke(app, ["run", "--source", str(video), "--model", str(exported / "tiny.pt2"), "--fp16"])
        assert result.exit_code == 1 and "fp16 runs only on a CUDA device" in result.output
    result = runner.invoke(app, ["run", "--source", str(video), "--cuda-graphs"])     # the shipped ONNX model
    assert result.exit_code == 1 and "apply to torch programs (.pt2)" in result.output
