"""Preprocessing in the graph: a uint8 BGR model gives what the float model gives, on real images.

No torch: the shipped model is converted with export/input_graph.py alone.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from export.formats import ExportError
from export.input_graph import add_uint8_input, write_uint8_input_model
from rtpose.cli import app
from rtpose.engine import open_engine
from rtpose.estimate import estimate
from rtpose.model_meta import FLOAT32_NCHW_RGB, META_KEY, UINT8_NHWC_BGR, ModelMeta
from rtpose.preprocess import letterbox, network_input, preprocess
from rtpose.runner import DEFAULT_MODEL


@pytest.fixture(scope="module")
def uint8_model(tmp_path_factory):
    return write_uint8_input_model(DEFAULT_MODEL, tmp_path_factory.mktemp("u8") / "default_uint8.onnx")


def test_a_model_written_before_input_formats_still_loads_as_float(tmp_path):
    model = onnx.load(str(DEFAULT_MODEL))
    entry = next(p for p in model.metadata_props if p.key == META_KEY)
    older = json.loads(entry.value)
    del older["input_format"], older["peak_top_k"]          # fields newer than the first exported models
    entry.value = json.dumps(older)
    onnx.save(model, str(tmp_path / "older.onnx"))
    assert open_engine(tmp_path / "older.onnx").meta.input_format == FLOAT32_NCHW_RGB


def test_the_converted_model_says_what_it_takes(uint8_model):
    engine = open_engine(uint8_model)
    assert engine.meta.input_format == UINT8_NHWC_BGR
    (graph_input,) = engine.session.get_inputs()
    assert graph_input.type == "tensor(uint8)" and graph_input.shape[1:] == [256, 320, 3]
    first_ops = [n.op_type for n in onnx.load(str(uint8_model)).graph.node[:5]]
    assert first_ops == ["Cast", "Gather", "Sub", "Div", "Transpose"]
    converted = onnx.load(str(uint8_model))
    assert add_uint8_input(converted) is converted                     # converting twice changes nothing


def test_both_input_formats_give_the_same_outputs_and_people_on_real_images(uint8_model, real_images):
    plain, graphed = open_engine(DEFAULT_MODEL), open_engine(uint8_model)
    assert len(real_images) == 11
    for image in real_images:
        x_float, box_a = preprocess(image, plain.meta)
        x_uint8, box_b = preprocess(image, graphed.meta)
        assert x_float.dtype == np.float32 and x_float.shape == (1, 3, 256, 320)
        assert x_uint8.dtype == np.uint8 and x_uint8.shape == (1, 256, 320, 3)
        assert box_a == box_b
        for a, b in zip(plain.infer(x_float), graphed.infer(x_uint8)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    people_a = estimate(plain, real_images[:4])          # a batch of 4, through the whole runtime path
    people_b = estimate(graphed, real_images[:4])
    for a, b in zip(people_a, people_b):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)


def test_uint8_input_is_the_letterboxed_pixels(real_images):
    meta = ModelMeta(input_format=UINT8_NHWC_BGR)
    canvas, _ = letterbox(real_images[0], meta.input_width, meta.input_height)
    np.testing.assert_array_equal(preprocess(real_images[0], meta)[0][0], canvas)
    with pytest.raises(ValueError, match="unknown model input format 'rgb565'"):
        network_input(canvas, ModelMeta(input_format="rgb565"))


def test_cli_converts_an_onnx_file_and_reports_parity(tmp_path):
    out = tmp_path / "m_uint8.onnx"
    result = CliRunner().invoke(app, ["export", str(DEFAULT_MODEL), "--input-format", UINT8_NHWC_BGR,
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    parity = re.search(r"uint8 input vs float32 input \(onnxruntime\), batch 2: max \|diff\| heatmaps (\S+), "
                       r"offsets (\S+), refinements (\S+)", result.output)
    assert parity and max(float(x) for x in parity.groups()) < 1e-5, result.output
    result = CliRunner().invoke(app, ["export", str(DEFAULT_MODEL), "--output", str(tmp_path / "again.onnx")])
    assert result.exit_code == 1 and "--input-format uint8_nhwc_bgr" in result.output


def test_conversion_refuses_a_model_that_is_not_rtpose(tmp_path):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(ExportError, match="not an rtpose pose model"):
        write_uint8_input_model(tmp_path / "plain.onnx", tmp_path / "out.onnx")


def test_conversion_needs_no_torch(tmp_path):
    code = ("import sys\nfrom export.input_graph import write_uint8_input_model\n"
            "from rtpose.runner import DEFAULT_MODEL\n"
            f"write_uint8_input_model(DEFAULT_MODEL, {str(tmp_path / 'm.onnx')!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'trainer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
