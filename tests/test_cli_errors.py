"""Bad input ends in one clear line on stderr and a non-zero exit: the console script, as a user runs it."""

import subprocess
import sys

import pytest
import torch


def rtpose(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rtpose.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def assert_one_line_error(result, *phrases):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in lines[0]


def test_missing_annotation_file(tmp_path):
    model = tmp_path / "m.pt"
    torch.save({"x": torch.zeros(1)}, model)
    assert_one_line_error(rtpose("eval", model, "--annotations", tmp_path / "no.json"), "not an rtpose checkpoint")


def test_malformed_annotation_file_and_missing_images(tmp_path, shared_data):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    config = tmp_path / "exp.yaml"
    config.write_text(f"train_annotations: {bad}\n")
    assert_one_line_error(rtpose("train", config), "not valid JSON")
    config.write_text(f"train_annotations: {shared_data / 'coco/test_coco.json'}\ntrain_images: {tmp_path}\n")
    assert_one_line_error(rtpose("train", config), "4 of 4 images", "missing")


def test_config_with_unknown_key(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("train_annotations: a.json\nbatchsize: 4\n")
    assert_one_line_error(rtpose("train", config), "unknown key 'batchsize'")


def test_checkpoint_of_another_architecture(tmp_path):
    from trainer.config import TrainConfig
    from trainer.model import SimplePoseNet
    from rtpose.skeleton import COCO
    config = TrainConfig(train_annotations="a.json")
    narrow = SimplePoseNet(COCO, TrainConfig(train_annotations="a.json", widths=(8, 8, 16, 16, 16)).model_config())
    ckpt = tmp_path / "other.pt"
    torch.save({"model": narrow.state_dict(), "config": config.to_dict(),
                "meta": config.model_meta(COCO).to_json()}, ckpt)
    assert_one_line_error(rtpose("export", ckpt, "--output", tmp_path / "m.onnx"), "do not fit")


@pytest.mark.parametrize("args, phrase", [
    (["export", "x.pt", "--output", "m.engine", "--format", "tflite"], "unknown export format 'tflite'"),
    (["export", "missing.pt", "--output", "m.onnx"], "checkpoint not found"),
])
def test_export_refuses_before_any_work(tmp_path, args, phrase):
    assert_one_line_error(rtpose(*args, cwd=tmp_path), phrase)


def test_onnx_file_that_is_not_an_rtpose_model(tmp_path, shared_data):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "relu.onnx")
    assert_one_line_error(rtpose("eval", tmp_path / "relu.onnx", "--annotations",
                                 shared_data / "coco/test_coco.json"), "not an rtpose pose model")
