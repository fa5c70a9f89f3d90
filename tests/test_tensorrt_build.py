"""TensorRT builds of FP32, FP16 and INT8 Q/DQ models against the faithful fake (tests/fakes/tensorrt.py).

What is proven: the builder gets a strongly typed network, an optimization
profile over the batch range, a timing cache it reuses, and refuses what
TensorRT refuses; the engine file's header records how it was built and its
name says it; the engine computes what onnxruntime computes on the same
graph. Nothing here ran on a GPU (see the README).
"""

import struct
import subprocess
import sys
from pathlib import Path

import fakes
import numpy as np
import onnx
import pytest
from fakes import tensorrt as fake_trt
from typer.testing import CliRunner

from calib.calibrate import calibrate
from export.formats import ExportError
from rtpose.cli import app
from rtpose.engine import open_engine
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.engine.tensorrt_file import MAGIC_V1, read_engine_build, read_engine_file
from rtpose.model_meta import ModelMeta
from rtpose.preprocess import preprocess
from rtpose.runner import DEFAULT_MODEL


@pytest.fixture
def gpu(monkeypatch):
    fakes.install(monkeypatch)
    yield fake_trt
    fakes.uninstall_users()


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory):
    root = tmp_path_factory.mktemp("qdq")
    return calibrate(DEFAULT_MODEL, "synthetic", root / "default_int8.onnx", method="minmax", images=8,
                     log=lambda m: None).output


@pytest.fixture(scope="module")
def images(shared_data):
    import cv2
    return [cv2.imread(str(p)) for p in sorted(shared_data.glob("coco/*.jpg"))]


def test_int8_engine_is_named_by_its_build_records_it_and_matches_onnxruntime(gpu, int8_onnx, tmp_path, images):
    from export.tensorrt_build import export_tensorrt
    path, parity = export_tensorrt(int8_onnx, tmp_path, max_batch=4)
    assert path == tmp_path / "default_b1-4_int8.engine"                 # the name says how it was built
    assert parity.startswith("TensorRT vs onnxruntime, batch 2: max |diff| heatmaps 0.00e+00")
    build = read_engine_build(path)
    assert build["precision"] == "int8" and (build["min_batch"], build["opt_batch"], build["max_batch"]) == (1, 4, 4)
    assert build["tensorrt"] == fake_trt.__version__ and build["strongly_typed"] is True
    assert build["source"] == "default_int8.onnx" and len(build["source_sha256"]) == 64
    assert build["input_format"] == "uint8_nhwc_bgr"
    assert build["timing_cache"] == str(tmp_path / "tensorrt.timing.cache")
    meta, plan = read_engine_file(path)
    header, _ = fake_trt.read_plan_header(plan)
    assert header["strongly_typed"] and header["profile"]["image"][0] == [1, 256, 320, 3]
    # The engine runs the Q/DQ graph: the same numbers as onnxruntime on that model, on real images.
    engine, reference = open_engine(path), OnnxRuntimeEngine(int8_onnx)
    batch = np.concatenate([preprocess(im, engine.meta)[0] for im in images])
    float_batch = np.concatenate([preprocess(im, reference.meta)[0] for im in images])
    for a, b in zip(engine.infer(batch), reference.infer(float_batch)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    engine.close()


def test_timing_cache_is_reused_by_the_next_build_and_a_bad_one_is_replaced(gpu, tmp_path, capsys):
    from export.tensorrt_build import build_engine
    cache = tmp_path / "timing.cache"
    first = build_engine(DEFAULT_MODEL, tmp_path / "a.engine", max_batch=2, timing_cache=cache)
    assert cache.is_file() and read_engine_build(first)["timing_cache_loaded"] is False
    second = build_engine(DEFAULT_MODEL, tmp_path / "b.engine", max_batch=2, timing_cache=cache)
    assert read_engine_build(second)["timing_cache_loaded"] is True
    timings = [fake_trt.read_plan_header(read_engine_file(p)[1])[0]["timing_cache"] for p in (first, second)]
    assert timings[0]["hits"] == 0 and timings[0]["misses"] > 0
    assert timings[1] == {"hits": timings[0]["misses"], "misses": 0}      # nothing timed again
    cache.write_bytes(b"garbage")                                            # damaged, or another TensorRT's
    third = build_engine(DEFAULT_MODEL, tmp_path / "c.engine", max_batch=2, timing_cache=cache)
    assert "starting a new one" in capsys.readouterr().err
    assert read_engine_build(third)["timing_cache_loaded"] is False and cache.read_bytes().startswith(b"FAKETC")


def test_fp16_and_batch_range_from_the_command_line(gpu, tmp_path):
    result = CliRunner().invoke(app, ["export", str(DEFAULT_MODEL), "--format", "tensorrt", "--precision", "fp16",
                                      "--min-batch", "2", "--max-batch", "6", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = tmp_path / "default_b2-6_fp16.engine"
    assert f"wrote {path}" in result.output and "FP16, batch 2..6 (tuned for 6)" in result.output
    assert "timing cache:" in result.output and "(new)" in result.output
    meta, plan = read_engine_file(path)
    onnx_model = onnx.load_from_string(plan[fake_trt.read_plan_header(plan)[1]:])
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx_model.graph.initializer)
    engine = open_engine(path)
    assert (engine.min_batch, engine.max_batch) == (2, 6)
    with pytest.raises(Exception, match="a batch of 1 is outside the engine's range 2..6"):
        engine.infer(np.zeros((1, 256, 320, 3), np.uint8))
    engine.close()
    result = CliRunner().invoke(app, ["export", str(DEFAULT_MODEL), "--format", "tensorrt", "--output", str(tmp_path),
                                      "--timing-cache", str(tmp_path / "tensorrt.timing.cache")])
    assert result.exit_code == 0 and "(reused)" in result.output and "default_b1-8_fp32.engine" in result.output


def test_precision_that_the_graph_does_not_have_is_refused_before_building(gpu, int8_onnx, tmp_path):
    from export.tensorrt_build import export_tensorrt
    with pytest.raises(ExportError, match="--precision int8 builds from an INT8 Q/DQ model.*rtpose calib"):
        export_tensorrt(DEFAULT_MODEL, tmp_path, precision="int8")
    with pytest.raises(ExportError, match="is INT8 .*engines are built strongly typed"):
        export_tensorrt(int8_onnx, tmp_path, precision="fp16")
    with pytest.raises(ExportError, match="1 <= --min-batch <= --max-batch, got 4..2"):
        export_tensorrt(DEFAULT_MODEL, tmp_path, min_batch=4, max_batch=2)
    assert not list(tmp_path.glob("*.engine"))


def test_fake_parser_refuses_what_tensorrt_refuses_in_explicit_quantization(gpu, tmp_path):
    """onnxruntime's quantizer defaults (INT32 bias, uint8 activations) give graphs TensorRT will not parse."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from export.tensorrt_build import build_engine
    x = preprocess(np.full((256, 320, 3), 128, np.uint8), ModelMeta())[0]

    class One(CalibrationDataReader):
        def __init__(self):
            self.left = [x]

        def get_next(self):
            return {"image": self.left.pop()} if self.left else None

    for name, activation, bias, match in (("bias", QuantType.QInt8, True, "only activation types allowed"),
                                          ("uint8", QuantType.QUInt8, False, "uint8 is not supported for Q/DQ")):
        path = tmp_path / f"{name}.onnx"
        quantize_static(str(DEFAULT_MODEL), str(path), One(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=activation, weight_type=QuantType.QInt8, extra_options={"QuantizeBias": bias})
        model = onnx.load(str(path))
        model.ir_version = min(model.ir_version, 10)
        onnx.save(model, str(path))
        with pytest.raises(ExportError, match=f"TensorRT cannot parse the model: .*{match}"):
            build_engine(path, tmp_path / f"{name}.engine", max_batch=1)


def test_no_gpu_is_one_clear_line(gpu, monkeypatch, tmp_path):
    monkeypatch.setattr(fake_trt, "_gpu_count", 0)
    result = CliRunner().invoke(app, ["export", str(DEFAULT_MODEL), "--format", "tensorrt", "--output", str(tmp_path)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output
    assert "could not start its builder: no usable NVIDIA GPU" in errors[0]
    assert "CUDA initialization failure" in errors[0]
    assert not list(tmp_path.glob("*.engine"))


def test_engine_files_of_header_layout_1_still_load(gpu, tmp_path):
    from export.tensorrt_build import build_engine
    new = build_engine(DEFAULT_MODEL, tmp_path / "new.engine", max_batch=2)
    meta, plan = read_engine_file(new)
    text = meta.to_json().encode()
    old = tmp_path / "old.engine"
    old.write_bytes(MAGIC_V1 + struct.pack("<I", len(text)) + text + plan)
    assert read_engine_build(old) == {} and read_engine_file(old)[0] == meta
    engine = open_engine(old)
    assert engine.infer(np.zeros((1, 3, 256, 320), np.float32))[0].shape == (1, 17, 64, 80)
    engine.close()


def test_building_imports_no_torch(int8_onnx, tmp_path):
    tests = str(Path(fakes.__file__).parents[1])
    code = (f"import sys\nsys.path.insert(0, {tests!r})\nimport fakes\n"
            "class Patch:\n    setitem = staticmethod(lambda d, k, v: d.__setitem__(k, v))\n"
            "    delitem = staticmethod(lambda d, k, raising=True: d.pop(k, None))\n"
            "fakes.install(Patch())\nfrom export.tensorrt_build import export_tensorrt\n"
            f"export_tensorrt({str(int8_onnx)!r}, {str(tmp_path)!r}, max_batch=2, check=False)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["[]"]
