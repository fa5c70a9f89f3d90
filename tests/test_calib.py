"""INT8 calibration (rtpose calib): the Q/DQ form, the runtime using it, the cache, the accuracy guard, bad input.

Real data: the shipped model, the sample images and vtest.avi from ../shared/data,
small synthetic COCO-format sets made here. No torch anywhere in calib.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from calib.calibrate import calibrate
from calib.data import open_calibration_data, spread
from calib.guard import LayerSensitivity, smallest_exclusion
from export.precision import PRECISION_KEY
from rtpose.cli import app
from rtpose.engine import open_engine
from rtpose.estimate import estimate
from rtpose.preprocess import preprocess
from rtpose.runner import DEFAULT_MODEL
from rtpose.synthetic.scene import SceneConfig, write_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """The shipped model calibrated on 16 synthetic scenes (min-max: the fastest method)."""
    root = tmp_path_factory.mktemp("int8")
    report = calibrate(DEFAULT_MODEL, "synthetic", root / "default_int8.onnx", method="minmax", images=16,
                       cache_dir=root / "cache", log=lambda m: None)
    return report.output, report


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory):
    """8 synthetic scenes (seed 2, as data/synth_val) in COCO format: CI has no data/ folder."""
    root = tmp_path_factory.mktemp("val")
    return write_dataset(root, 8, 2, SceneConfig(width=320, height=256))


def test_qdq_file_holds_only_symmetric_int8_with_per_channel_conv_weights(int8_model):
    path, _ = int8_model
    model = onnx.load(str(path))
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset.get("", opset.get("ai.onnx", 0)) >= 17 and model.ir_version <= 10
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 60
    for node in qdq:
        assert node.domain in ("", "ai.onnx"), node.name                 # standard ops, no contrib ones
        zero_point, scale = inits[node.input[2]], inits[node.input[1]]   # constant, present
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        assert scale.dtype == np.float32 and (scale > 0).all(), node.name
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].dtype == np.int8, node.name      # no INT32 bias: TensorRT refuses it
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 30
    for conv in convs:
        dq = producer[conv.input[1]]
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        assert dq.op_type == "DequantizeLinear" and weight.dtype == np.int8 and weight.ndim == 4
        assert np.abs(weight).max() == 64, conv.name      # 7 bits: no saturation on x86 without VNNI
        assert axis == 0 and scale.shape == (weight.shape[0],), conv.name    # one scale per output channel
        assert producer[conv.input[0]].op_type == "DequantizeLinear"        # the activation is INT8 too
        assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32
    for output in model.graph.output:                                        # outputs keep full precision
        assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert producer[output.name].op_type != "DequantizeLinear"
    record = json.loads({p.key: p.value for p in model.metadata_props}[PRECISION_KEY])
    assert record["precision"] == "int8" and record["method"] == "minmax" and record["calibration_images"] == 16


def test_int8_model_runs_through_open_engine_with_its_metadata_and_stays_close_on_real_images(int8_model,
                                                                                              coco_crowdpose_images):
    path, _ = int8_model
    fp32, int8 = open_engine(DEFAULT_MODEL), open_engine(path)
    assert type(int8).__name__ == "OnnxRuntimeEngine"
    assert int8.meta.skeleton == fp32.meta.skeleton and int8.meta.output_names == fp32.meta.output_names
    assert (int8.meta.input_width, int8.meta.input_height, int8.meta.mean) == \
           (fp32.meta.input_width, fp32.meta.input_height, fp32.meta.mean)
    # Bounds from the shipped model's measured spread on these photos; activation scales made 4x
    # coarser, or halved so that they clip, measured relative up to 0.94 and 0.55, heatmaps 0.60 and 0.64.
    for image in coco_crowdpose_images:
        x = preprocess(image, fp32.meta)[0]
        for name, a, b in zip(fp32.meta.output_names, fp32.infer(x), int8.infer(x)):
            assert b.dtype == np.float32 and b.shape == a.shape
            relative = np.linalg.norm(b - a) / np.linalg.norm(a)
            assert relative < 0.35, (name, relative)                      # measured 0.10-0.26
        assert np.abs(int8.infer(x)[0] - fp32.infer(x)[0]).max() < 0.4    # heatmaps: measured 0.12-0.34
    people_fp32, people_int8 = estimate(fp32, coco_crowdpose_images), estimate(int8, coco_crowdpose_images)
    found_fp32 = sum(len(p.scores) for p in people_fp32)
    assert abs(sum(len(p.scores) for p in people_int8) - found_fp32) <= 0.25 * found_fp32


def test_calibration_data_is_preprocessed_as_the_runtime_does(shared_data, tmp_path):
    meta = open_engine(DEFAULT_MODEL).meta
    folder = open_calibration_data(shared_data / "mpii", 3, meta)
    files = sorted((shared_data / "mpii").glob("*.jpg"))
    assert (folder.kind, folder.count, folder.available) == ("folder", 3, 5)
    chosen = [files[i] for i in spread(5, 3)]                       # first, middle, last
    for batch, file in zip(folder.batches(meta), chosen):
        np.testing.assert_array_equal(batch, preprocess(cv2.imread(str(file)), meta)[0])
    video = open_calibration_data(shared_data / "video/vtest.avi", 4, meta)
    assert (video.kind, video.count, video.available) == ("video", 4, 795)
    assert video.fingerprint[1:] == ["frame 0", "frame 265", "frame 529", "frame 794"]   # spread over the file
    assert [b.shape for b in video.batches(meta)] == [(1, 3, 256, 320)] * 4
    coco = open_calibration_data(shared_data / "coco/test_coco.json", 2, meta)
    assert (coco.kind, coco.count, coco.available) == ("coco", 2, 4)
    synthetic = open_calibration_data("synthetic:5", 2, meta)
    assert synthetic.kind == "synthetic" and len(list(synthetic.batches(meta))) == 2
    assert synthetic.fingerprint != open_calibration_data("synthetic:6", 2, meta).fingerprint


def test_second_run_reads_the_cache_and_a_changed_image_or_model_does_not(shared_data, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted(shared_data.glob("mpii/*.jpg"))[:4]:
        shutil.copy(p, images)
    cache = tmp_path / "cache"

    def run(model=DEFAULT_MODEL, name="a.onnx"):
        return calibrate(model, str(images), tmp_path / name, method="minmax", images=4, cache_dir=cache,
                         log=lambda m: None)

    first = run()
    assert (first.cache_hit, first.calibration_passes) == (False, 1)
    again = run(name="b.onnx")
    assert (again.cache_hit, again.calibration_passes) == (True, 0) and again.cache_file == first.cache_file
    assert any("calibration pass skipped" in line for line in again.lines())
    a, b = onnx.load(str(tmp_path / "a.onnx")), onnx.load(str(tmp_path / "b.onnx"))
    assert [i.raw_data for i in a.graph.initializer] == [i.raw_data for i in b.graph.initializer]

    changed = images / sorted(p.name for p in images.iterdir())[1]
    cv2.imwrite(str(changed), cv2.flip(cv2.imread(str(changed)), 1))      # same name, other pixels
    assert run().cache_hit is False

    other = onnx.load(str(DEFAULT_MODEL))                                 # another model: a retrained head
    weights = next(i for i in other.graph.initializer if i.name == "keypoint_head.1.bias")
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) + 0.1, weights.name))
    onnx.save(other, str(tmp_path / "other.onnx"))
    assert run(tmp_path / "other.onnx").cache_hit is False

    stale = run().cache_file                                              # hit again, then damage the file
    assert run().cache_hit
    stale.write_text(json.dumps({"rtpose": {"key": "not this one"}}))
    assert run().cache_hit is False


def test_calibrating_on_a_real_video_prints_the_report(shared_data, tmp_path):
    out = tmp_path / "vtest_int8.onnx"
    result = subprocess.run([sys.executable, "-m", "rtpose.cli", "calib", str(DEFAULT_MODEL), "--data",
                             str(shared_data / "video/vtest.avi"), "--images", "16", "--output", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "16 of 795 frames from" in result.stdout and "method percentile" in result.stdout
    assert "INT8 layers: Conv 30, Add 10" in result.stdout and "max |diff| heatmaps" in result.stdout
    assert "accuracy: not measured (no --val)" in result.stdout and f"wrote {out}" in result.stdout
    assert "warning: calibrating on 16 images" in result.stderr                 # too few: said, with the number
    assert open_engine(out).meta.output_names == ("heatmaps", "offsets", "refinements")


def test_guard_reports_both_aps_and_keeps_the_most_sensitive_layers_in_fp32(tmp_path, tiny_val, monkeypatch):
    """Calibrated on flat grey frames the ranges are far too narrow: INT8 loses AP, the guard wins it back."""
    import calib.calibrate
    monkeypatch.setattr(calib.calibrate, "SENSITIVITY_IMAGES", 2)             # 44 layers x 2 images: affordable
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(4):
        cv2.imwrite(str(grey / f"{i}.png"), np.full((256, 320, 3), 100 + 10 * i, np.uint8))
    report = calibrate(DEFAULT_MODEL, str(grey), tmp_path / "grey_int8.onnx", method="minmax", images=4,
                       val=tiny_val, cache_dir=tmp_path / "cache", log=lambda m: None)
    guard = report.guard
    assert 100 * (guard.ap_fp32 - guard.ap_int8_all) > 1.0                   # all-INT8 is over the limit
    assert 100 * (guard.ap_fp32 - guard.ap_final) <= 1.0                      # what was written is not
    assert 0 < len(guard.kept_fp32) < len(guard.ranking) == 44
    errors = [s.error for s in guard.ranking]
    assert errors == sorted(errors, reverse=True) and guard.kept_fp32 == guard.ranking[:len(guard.kept_fp32)]
    text = "\n".join(report.lines())
    assert f"AP FP32 {guard.ap_fp32:.3f}, INT8 {guard.ap_int8_all:.3f}" in text
    assert f"layers kept in FP32: {len(guard.kept_fp32)} of 44" in text and guard.kept_fp32[0].label in text
    model = onnx.load(str(report.output))                                     # those layers have float inputs
    producer = {o: n for n in model.graph.node for o in n.output}
    for kept in guard.kept_fp32:
        node = next(n for n in model.graph.node if n.name == kept.name)
        assert all(t not in producer or producer[t].op_type != "DequantizeLinear" for t in node.input)
    record = json.loads({p.key: p.value for p in model.metadata_props}[PRECISION_KEY])
    assert record["kept_fp32"] == [s.name for s in guard.kept_fp32] and record["ap_int8"] == guard.ap_final


def test_exclusion_search_finds_the_fewest_layers_by_doubling_and_bisecting():
    ranking = [LayerSensitivity(f"l{i}", f"l{i}", 1.0 / (i + 1)) for i in range(20)]
    tried = []
    # AP recovers with each sensitive layer kept in FP32: 0.20 + 0.01 per layer, up to FP32's 0.30.
    k, ap = smallest_exclusion(ranking, lambda kept: min(0.30, 0.20 + 0.01 * len(kept)), 0.30, 1.0, tried)
    assert (k, round(ap, 2)) == (9, 0.29)
    assert [t for t, _ in tried] == [1, 2, 4, 8, 16, 12, 10, 9]
    k, ap = smallest_exclusion(ranking, lambda kept: 0.25 if len(kept) < 20 else 0.30, 0.30, 1.0, [])
    assert k == 20                                                            # only all of them: the caller refuses


def rtpose(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rtpose.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=120)


def one_error_line(output: str) -> str:
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_bad_input_is_one_clear_line(tmp_path, shared_data, monkeypatch):
    runner = CliRunner()

    def calib(*args):
        result = runner.invoke(app, ["calib", str(DEFAULT_MODEL), "--output", str(tmp_path / "o.onnx"),
                                     *map(str, args)])
        assert result.exit_code != 0
        return one_error_line(result.output)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "the calibration folder" in calib("--data", empty) and "holds no images" in calib("--data", empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg")
    assert "is not an image OpenCV can read" in calib("--data", broken)
    assert "calibration data not found" in calib("--data", tmp_path / "nowhere")
    assert "unknown calibration method 'kl'" in calib("--data", "synthetic", "--method", "kl")
    assert "cannot be negative" in calib("--data", "synthetic", "--max-ap-drop", "-1")
    assert "not found" in calib("--data", "synthetic", "--val", tmp_path / "no.json")

    real_iterdir = Path.iterdir

    def unreadable(self):
        if self == empty:
            raise PermissionError(13, "Permission denied")
        return real_iterdir(self)
    monkeypatch.setattr(Path, "iterdir", unreadable)      # (tests run as root here: chmod would not stop reads)
    assert "cannot read the calibration folder" in calib("--data", empty) and "Permission denied" in calib(
        "--data", empty)
    monkeypatch.undo()

    # A model without rtpose metadata, through the console script as a user runs it.
    plain = onnx.load(str(DEFAULT_MODEL))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    result = rtpose("calib", tmp_path / "plain.onnx", "--data", "synthetic", "--output", tmp_path / "p.onnx")
    line = one_error_line(result.stderr)
    assert result.returncode != 0 and "is not an rtpose" in line and "no 'rtpose' metadata" in line

    # Too few images: a warning with the numbers, and the model is still made.
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(shared_data.glob("coco/*.jpg"))[:3]:
        shutil.copy(p, few)
    result = runner.invoke(app, ["calib", str(DEFAULT_MODEL), "--data", str(few), "--method", "minmax",
                                 "--output", str(tmp_path / "few.onnx")])
    assert result.exit_code == 0, result.output
    assert "holds 3 images; 128 were asked for" in result.output and "calibrating on 3 images" in result.output

    def export(*args):
        result = runner.invoke(app, ["export", str(DEFAULT_MODEL), *map(str, args)])
        assert result.exit_code != 0
        return one_error_line(result.output)

    assert "unknown export format 'tflite'" in export("--format", "tflite", "--output", tmp_path / "m.x")
    line = export("--format", "torch", "--precision", "fp16", "--output", tmp_path / "m.pt2")
    assert "format 'torch' does not take --precision (it takes: --input-size, --max-batch)" in line
    line = export("--format", "onnx", "--timing-cache", tmp_path / "t", "--output", tmp_path / "m.onnx")
    assert "does not take --timing-cache" in line and "--input-format" in line and "_" not in line.split("takes:")[1]
    assert "rtpose calib" in export("--precision", "int8", "--output", tmp_path / "m.onnx")
    assert "one of fp32, fp16, not 'fp8'" in export("--precision", "fp8", "--output", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_calib_imports_no_torch(tmp_path, tiny_val):
    code = ("import sys\nfrom calib.calibrate import calibrate\nfrom rtpose.runner import DEFAULT_MODEL\n"
            f"calibrate(DEFAULT_MODEL, 'synthetic', {str(tmp_path / 'm.onnx')!r}, method='minmax', images=2, "
            f"val={str(tiny_val)!r}, max_ap_drop=100, log=lambda m: None)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"
