"""The TensorRT engine and builder, against faithful fakes of TensorRT and cuda-python (tests/fakes).

No GPU and no TensorRT here: these tests prove the code drives the named-tensor
API and the CUDA runtime calls correctly (names, shapes, dtypes, profiles,
buffer sizes, stream order, errors) and that the engine computes what
onnxruntime computes on real images. They do not prove anything about a real
GPU; see the README.
"""

import subprocess
import sys
from pathlib import Path

import fakes
import numpy as np
import onnx
import pytest
from fakes import cudart as fake_cudart
from fakes import tensorrt as fake_trt
from onnx import TensorProto, helper
from typer.testing import CliRunner

from rtpose.cli import app
from rtpose.engine import EngineError, open_engine
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.engine.tensorrt_file import MAGIC, read_engine_file
from rtpose.estimate import estimate
from rtpose.model_meta import FLOAT32_NCHW_RGB, UINT8_NHWC_BGR
from rtpose.preprocess import preprocess
from rtpose.runner import DEFAULT_MODEL

MAX_BATCH = 4


@pytest.fixture
def gpu(monkeypatch):
    """The fakes installed as ``tensorrt`` and ``cuda``; every allocation must be freed by the end."""
    fakes.install(monkeypatch)
    yield fake_cudart
    fakes.uninstall_users()


@pytest.fixture
def engine_file(gpu, tmp_path):
    from export.tensorrt_build import export_tensorrt
    path, parity = export_tensorrt(DEFAULT_MODEL, tmp_path / "default_b4.engine", max_batch=MAX_BATCH)
    assert parity.startswith("TensorRT vs onnxruntime, batch 2: max |diff| heatmaps 0.00e+00")
    return path


def float_batch(images, meta):
    return np.concatenate([preprocess(im, meta)[0] for im in images])


def test_build_writes_header_and_a_strongly_typed_plan_with_the_batch_profile(engine_file):
    meta, plan = read_engine_file(engine_file)
    assert engine_file.read_bytes().startswith(MAGIC)
    assert meta.input_format == UINT8_NHWC_BGR                  # the default: preprocessing on the GPU
    assert meta.versions["tensorrt"] == fake_trt.__version__
    header, _ = fake_trt.read_plan_header(plan)
    assert header["strongly_typed"] is True
    assert header["profile"] == {"image": [[1, 256, 320, 3], [MAX_BATCH, 256, 320, 3], [MAX_BATCH, 256, 320, 3]]}
    assert header["workspace"] == 2 << 30


def test_engine_matches_onnxruntime_on_real_images_for_every_batch_size(engine_file, coco_crowdpose_images, gpu):
    engine = open_engine(engine_file)
    assert type(engine).__name__ == "TensorRTEngine" and engine.max_batch == MAX_BATCH
    reference = OnnxRuntimeEngine(DEFAULT_MODEL)                  # the float model, normalised on the host
    for n in range(1, MAX_BATCH + 1):
        photos = coco_crowdpose_images
        images = [photos[(n + i) % len(photos)] for i in range(n)]   # a different mix each time
        batch = np.concatenate([preprocess(im, engine.meta)[0] for im in images])
        assert batch.dtype == np.uint8 and batch.shape == (n, 256, 320, 3)
        got, expected = engine.infer(batch), reference.infer(float_batch(images, reference.meta))
        assert [o.shape for o in got] == [o.shape for o in expected]
        for a, b in zip(got, expected):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    engine.close()
    assert gpu.live_allocations() == {"device": 0, "pinned": 0, "streams": 0}
    engine.close()                                                # twice is harmless


def test_buffers_are_sized_once_for_the_largest_batch_and_infer_only_copies_and_runs(engine_file, gpu):
    engine = open_engine(engine_file)
    sizes = {name: (b.nbytes, b.dtype) for name, b in engine._buffers.items()}
    assert sizes == {"image": (MAX_BATCH * 256 * 320 * 3, np.uint8),             # a quarter of float32
                     "heatmaps": (MAX_BATCH * 17 * 64 * 80 * 4, np.float32),
                     "offsets": (MAX_BATCH * engine.meta.skeleton.num_offset_channels * 64 * 80 * 4, np.float32),
                     "refinements": (MAX_BATCH * 34 * 64 * 80 * 4, np.float32)}
    assert gpu.live_allocations() == {"device": 4, "pinned": 4, "streams": 1}
    gpu.state.calls.clear()
    engine.infer(np.zeros((2, 256, 320, 3), np.uint8))
    # One upload, the engine on the stream, three downloads, one wait; nothing allocated per call.
    assert gpu.state.calls == ["cudaMemcpyAsync"] * 4 + ["cudaStreamSynchronize"]
    assert engine.context.runs == 1
    engine.close()


def test_batch_beyond_the_profile_and_wrong_input_are_clear_errors(engine_file, gpu):
    engine = open_engine(engine_file)
    with pytest.raises(EngineError, match=r"a batch of 5 is outside the engine's range 1..4.*--max-batch"):
        engine.infer(np.zeros((5, 256, 320, 3), np.uint8))
    with pytest.raises(EngineError, match=r"takes uint8 \[N, 256, 320, 3\] \(uint8_nhwc_bgr\); got float32"):
        engine.infer(np.zeros((1, 3, 256, 320), np.float32))
    engine.close()


def test_tensorrt_refusing_to_run_is_reported_with_its_message(engine_file, gpu):
    engine = open_engine(engine_file)
    engine.context._addresses.pop("offsets")            # as if an address had never been set
    with pytest.raises(EngineError, match="could not run the engine: .*address of tensor offsets"):
        engine.infer(np.zeros((1, 256, 320, 3), np.uint8))
    engine.close()


def test_fake_rejects_what_tensorrt_rejects(engine_file, gpu):
    _, plan = read_engine_file(engine_file)
    logger = fake_trt.Logger()
    cuda_engine = fake_trt.Runtime(logger).deserialize_cuda_engine(plan)
    assert cuda_engine.get_tensor_shape("image") == (-1, 256, 320, 3)
    assert cuda_engine.get_tensor_dtype("image") == fake_trt.DataType.UINT8
    assert cuda_engine.get_tensor_mode("heatmaps") == fake_trt.TensorIOMode.OUTPUT
    context = cuda_engine.create_execution_context()
    assert context.get_tensor_shape("heatmaps") == (-1, 17, 64, 80)       # until the input shape is set
    _, stream = gpu.cudaStreamCreate()
    assert context.execute_async_v3(int(stream)) is False                    # no input shape
    assert not context.set_input_shape("image", (MAX_BATCH + 1, 256, 320, 3))
    assert not context.set_input_shape("image", (1, 3, 256, 320))
    assert context.set_input_shape("image", (2, 256, 320, 3))
    assert context.get_tensor_shape("heatmaps") == (2, 17, 64, 80)
    assert context.execute_async_v3(int(stream)) is False                    # no addresses
    small = {name: gpu.cudaMalloc(16)[1] for name in ("image", "heatmaps", "offsets", "refinements")}
    for name, ptr in small.items():
        assert context.set_tensor_address(name, ptr)
    assert context.execute_async_v3(int(stream)) is False                    # buffers too small
    assert not context.set_tensor_address("no_such_tensor", small["image"])
    assert fake_trt.Runtime(logger).deserialize_cuda_engine(b"garbage") is None
    assert any("Magic tag does not match" in msg for _, msg in logger.messages)
    for ptr in small.values():
        gpu.cudaFree(ptr)
    gpu.cudaStreamDestroy(stream)


def test_float_input_engine_and_half_outputs(gpu, tmp_path, coco_crowdpose_images):
    from export.tensorrt_build import build_engine, export_tensorrt
    path, _ = export_tensorrt(DEFAULT_MODEL, tmp_path / "float.engine", max_batch=2, input_format=FLOAT32_NCHW_RGB,
                              check=False)
    engine = open_engine(path)
    reference = OnnxRuntimeEngine(DEFAULT_MODEL)
    batch = float_batch(coco_crowdpose_images[:2], engine.meta)
    assert engine._buffers["image"].dtype == np.float32
    for a, b in zip(engine.infer(batch), reference.infer(batch)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    engine.close()

    # A graph whose outputs are float16 (the precision lives in the ONNX): HALF tensors, float32 results.
    model = onnx.load(str(DEFAULT_MODEL))
    for out in model.graph.output:
        for node in model.graph.node:
            node.output[:] = [o + "_f32" if o == out.name else o for o in node.output]
        model.graph.node.append(helper.make_node("Cast", [out.name + "_f32"], [out.name], to=TensorProto.FLOAT16))
        out.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.save(model, str(tmp_path / "half_out.onnx"))
    build_engine(tmp_path / "half_out.onnx", tmp_path / "half_out.engine", max_batch=2)
    engine = open_engine(tmp_path / "half_out.engine")
    assert all(engine._buffers[n].dtype == np.float16 for n in engine.meta.output_names)
    for a, b in zip(engine.infer(batch), reference.infer(batch)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    engine.close()


def test_people_through_the_runtime_path_match_onnxruntime(engine_file, coco_crowdpose_images, gpu):
    engine = open_engine(engine_file)
    got = estimate(engine, coco_crowdpose_images[:MAX_BATCH])
    expected = estimate(OnnxRuntimeEngine(DEFAULT_MODEL), coco_crowdpose_images[:MAX_BATCH])
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)
    engine.close()


def test_older_cuda_python_import_path(monkeypatch, engine_file, gpu):
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)     # before cuda-python 12.6: `from cuda import cudart`
    fakes.forget_users(monkeypatch)
    engine = open_engine(engine_file)
    assert engine.infer(np.zeros((1, 256, 320, 3), np.uint8))[0].shape == (1, 17, 64, 80)
    engine.close()


def test_engine_built_by_another_tensorrt_is_refused_with_the_fix(engine_file, gpu, monkeypatch):
    monkeypatch.setattr(fake_trt, "__version__", "11.0.0+fake")
    with pytest.raises(EngineError, match=r"TensorRT 11.0.0\+fake cannot load this engine \(built with TensorRT "
                                          r"10.99.0\+fake.*rtpose export .*--format tensorrt.*please rebuild"):
        open_engine(engine_file)
    assert gpu.live_allocations() == {"device": 0, "pinned": 0, "streams": 0}


def test_files_that_are_not_rtpose_engines_are_refused_without_tensorrt(tmp_path):
    bare = tmp_path / "model.plan"
    bare.write_bytes(b"ftrt" + bytes(100))                       # a bare TensorRT plan: no rtpose header
    with pytest.raises(EngineError, match="not an rtpose TensorRT engine .*--format tensorrt"):
        open_engine(bare)
    cut = tmp_path / "cut.engine"
    cut.write_bytes(MAGIC + (5000).to_bytes(4, "little") + b"{}")
    with pytest.raises(EngineError, match="damaged rtpose engine header"):
        open_engine(cut)


def test_without_tensorrt_run_and_export_say_what_to_install(monkeypatch, tmp_path):
    from rtpose.engine.tensorrt_file import write_engine_file
    from rtpose.model_meta import ModelMeta
    monkeypatch.setitem(sys.modules, "tensorrt", None)            # as on a machine without TensorRT
    fakes.forget_users(monkeypatch)
    engine = write_engine_file(tmp_path / "m.engine", ModelMeta(), b"plan")
    with pytest.raises(EngineError, match=r"needs TensorRT and cuda-python.*pip install 'rtpose\[tensorrt\]'"):
        open_engine(engine)
    result = CliRunner().invoke(app, ["export", str(DEFAULT_MODEL), "--format", "tensorrt",
                                      "--output", str(tmp_path / "x.engine")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output
    assert "pip install 'rtpose[tensorrt]'" in errors[0] and not (tmp_path / "x.engine").exists()
    fakes.uninstall_users()


def test_cli_builds_from_onnx_and_runs_the_engine(gpu, tmp_path, shared_data):
    out = tmp_path / "default_b2.engine"
    result = CliRunner().invoke(app, ["export", str(DEFAULT_MODEL), "--format", "tensorrt", "--max-batch", "2",
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "parity: TensorRT vs onnxruntime, batch 2: max |diff| heatmaps 0.00e+00" in result.output
    result = CliRunner().invoke(app, ["export", str(DEFAULT_MODEL), "--format", "tensorrt",
                                      "--output", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and "must end in .engine or .plan" in result.output


def test_running_onnx_and_tensorrt_models_imports_no_torch(engine_file, shared_data):
    tests = str(Path(fakes.__file__).parents[1])
    image = str(shared_data / "coco/000000000785.jpg")
    code = (f"import sys\nsys.path.insert(0, {tests!r})\nimport fakes\n"
            "class Patch:\n    setitem = staticmethod(lambda d, k, v: d.__setitem__(k, v))\n"
            "    delitem = staticmethod(lambda d, k, raising=True: d.pop(k, None))\n"
            "fakes.install(Patch())\nimport cv2\n"
            "from rtpose.engine import open_engine\nfrom rtpose.estimate import estimate\n"
            f"for model in ({str(DEFAULT_MODEL)!r}, {str(engine_file)!r}):\n"
            f"    engine = open_engine(model)\n    estimate(engine, [cv2.imread({image!r})])\n"
            "    print(type(engine).__name__)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'trainer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["OnnxRuntimeEngine", "TensorRTEngine", "[]"]
