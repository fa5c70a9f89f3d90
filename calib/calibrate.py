"""``rtpose calib``: an rtpose ONNX model and calibration images in, an INT8 Q/DQ model and a report out.

Steps: check every input before any work (model, method, limit, data,
validation set); ranges from the cache or from one calibration pass;
the Q/DQ model; outputs against FP32 on calibration images; with a
validation set, AP of FP32 and INT8 and, if INT8 loses more than the limit,
the most sensitive layers kept in FP32 (:mod:`calib.guard`); the model
written with its rtpose metadata and a ``rtpose_quantization`` entry that
records how it was made.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import rtpose
from calib import cache
from calib.data import CalibrationError, open_calibration_data
from calib.guard import (
    SENSITIVITY_IMAGES,
    GuardResult,
    ValidationSet,
    output_error,
    rank_layers,
    smallest_exclusion,
)
from calib.quantize import (
    METHODS,
    Settings,
    check_qdq,
    compute_ranges,
    layer_label,
    layers,
    prepare,
    quantize,
    summary,
)
from export.formats import ExportError
from export.onnx_file import read_onnx_meta, write_onnx_meta
from export.precision import PRECISION_KEY
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.model_meta import ModelMeta
from rtpose.progress import Progress

DEFAULT_METHOD = "percentile"       # as accurate as entropy here and 5x faster; see benchmarks/README.md
DEFAULT_IMAGES = 128
DEFAULT_MAX_AP_DROP = 1.0            # AP points
DEFAULT_VAL_IMAGES = 200
PARITY_IMAGES = 8


@dataclass
class CalibrationReport:
    model: Path
    output: Path
    method: str
    data: str                          # what the images were
    images: int
    cache_file: Path
    cache_hit: bool
    calibration_passes: int            # 0 when the cache answered
    layers_int8: str                   # "Conv 30, Add 10, ..."
    parity: dict[str, float]           # output -> max |INT8 - FP32| on calibration images
    parity_images: int
    warnings: list[str] = field(default_factory=list)
    val: Path | None = None
    val_images: int = 0
    guard: GuardResult | None = None

    def lines(self) -> list[str]:
        out = [f"model: {self.model}",
               f"calibration data: {self.data}; method {self.method}"]
        if self.cache_hit:
            out.append(f"ranges: from the cache {self.cache_file} (same model, data, preprocessing and "
                       f"settings); calibration pass skipped")
        else:
            out.append(f"ranges: computed from {self.images} images, cached in {self.cache_file}")
        out.append(f"INT8 layers: {self.layers_int8}; model outputs kept FP32")
        diffs = ", ".join(f"{name} {d:.3g}" for name, d in self.parity.items())
        out.append(f"INT8 vs FP32 on {self.parity_images} calibration images: max |diff| {diffs}")
        g = self.guard
        if g is None:
            out.append("accuracy: not measured (no --val); check it with rtpose eval before deploying")
            return out
        drop_all = round(100.0 * (g.ap_fp32 - g.ap_int8_all), 1) + 0.0     # + 0.0: no "-0.0"
        out.append(f"accuracy on {self.val} ({self.val_images} images): AP FP32 {g.ap_fp32:.3f}, "
                   f"INT8 {g.ap_int8_all:.3f} (drop {drop_all:+.1f} AP points; limit {g.limit:g})")
        if not g.kept_fp32:
            out.append("layers kept in FP32: none (every layer is INT8; the drop is within the limit)")
            return out
        out.append(f"layers kept in FP32: {len(g.kept_fp32)} of {len(g.ranking)}, the most sensitive "
                   f"(output error with only that layer INT8):")
        out += [f"  {s.label}: {s.error:.4f}" for s in g.kept_fp32]
        tried = ", ".join(f"{k} in FP32 -> AP {ap:.3f}" for k, ap in g.tried)
        out.append(f"  searched: {tried}")
        drop = round(g.drop_points, 1) + 0.0
        out.append(f"accuracy with them in FP32: AP {g.ap_final:.3f} (drop {drop:+.1f} AP points, "
                   f"within the limit of {g.limit:g})")
        return out


def default_output(model: Path) -> Path:
    return model.with_name(f"{model.stem}_int8.onnx")


def calibrate(model: str | Path, data: str, output: str | Path | None = None, method: str = DEFAULT_METHOD,
              images: int = DEFAULT_IMAGES, val: str | Path | None = None, val_images: int = DEFAULT_VAL_IMAGES,
              max_ap_drop: float = DEFAULT_MAX_AP_DROP, cache_dir: str | Path | None = None,
              log: Callable[[str], None] = print) -> CalibrationReport:
    """Make ``output``, an INT8 Q/DQ model, from ``model``; see the module docstring. Returns the report."""
    model = Path(model)
    output = Path(output) if output else default_output(model)
    # --- everything checked before any work
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method '{method}' (known: {', '.join(METHODS)})")
    if max_ap_drop < 0:
        raise CalibrationError(f"--max-ap-drop is in AP points and cannot be negative, got {max_ap_drop:g}")
    if output.suffix != ".onnx":
        raise CalibrationError(f"the INT8 model is an ONNX file: --output must end in .onnx, got {output.name}")
    if output.resolve() == model.resolve():
        raise CalibrationError("--output must not be the model being calibrated")
    model_bytes, meta = _read_model(model)
    if val_images < 1:
        raise CalibrationError(f"--val-images must be at least 1, got {val_images}")
    validation = None
    if val is not None:
        validation = ValidationSet(val, val_images)
        validation.check_model(meta)
    settings = Settings(method=method)
    calibration = open_calibration_data(data, images, meta)
    warnings = calibration.warnings(images)
    for note in warnings:
        log(f"warning: {note}")

    cache_root = Path(cache_dir) if cache_dir else output.parent / cache.CACHE_DIR_NAME
    key = cache.cache_key(model_bytes, calibration, meta, settings.as_key())
    ranges_file = cache.cache_file(cache_root, method, key)
    with tempfile.TemporaryDirectory(prefix="rtpose-calib-") as tmp:
        workdir = Path(tmp)
        prepared = prepare(model, workdir)
        hit = cache.load_ranges(ranges_file, key) is not None
        if not hit:
            with Progress(calibration.count, f"calibrating ({method})", "img") as bar:
                ranges = compute_ranges(prepared, meta.input_name, calibration.batches(meta), settings, workdir,
                                        bar.update)
            cache.save_ranges(ranges_file, key, ranges, {"model": str(model), "data": calibration.describe(),
                                                         "method": method, "images": calibration.count})
        full = quantize(prepared, ranges_file, settings)
        _check(full, "the INT8 model")
        full_path = _save(full, workdir / "int8_all.onnx", meta)
        names = layers(full)
        labels = {name: layer_label(full, name) for name in names}

        reference = OnnxRuntimeEngine(model)
        final, final_path, guard = full, full_path, None
        if validation is not None:
            guard = _guard(reference, full_path, names, labels, validation, prepared, ranges_file, settings, meta,
                           max_ap_drop, workdir, log)
            if guard.kept_fp32:
                final = quantize(prepared, ranges_file, settings, exclude=[s.name for s in guard.kept_fp32])
                _check(final, "the INT8 model with layers kept in FP32")
                final_path = _save(final, workdir / "int8_final.onnx", meta)
        parity_inputs = [b for _, b in zip(range(PARITY_IMAGES), calibration.batches(meta))]
        expected = [reference.infer(x) for x in parity_inputs]
        got = _infer_all(final_path, parity_inputs)
        parity = {name: max(float(np.abs(e[k] - g[k]).max()) for e, g in zip(expected, got))
                  for k, name in enumerate(meta.output_names)}
        reference.close()
        report = CalibrationReport(
            model=model, output=output, method=method, data=calibration.describe(), images=calibration.count,
            cache_file=ranges_file, cache_hit=hit, calibration_passes=0 if hit else 1,
            layers_int8=summary(final, [s.name for s in guard.kept_fp32] if guard else ()), parity=parity,
            parity_images=len(parity_inputs), warnings=warnings,
            val=Path(val) if val is not None else None, val_images=len(validation) if validation else 0,
            guard=guard)
        _write(final, output, meta, report)
    return report


def _read_model(model: Path) -> tuple[bytes, ModelMeta]:
    try:
        data = model.read_bytes()
    except FileNotFoundError:
        raise CalibrationError(f"model not found: {model}") from None
    except IsADirectoryError:
        raise CalibrationError(f"{model} is a folder, not an ONNX model") from None
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's own errors for a file that is not ONNX
        raise CalibrationError(f"{model} is not an ONNX model ({type(exc).__name__})") from None
    try:
        meta = read_onnx_meta(proto, model)
    except ExportError as exc:
        raise CalibrationError(f"{exc}; calibrate a model made by rtpose export") from None
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        raise CalibrationError(f"{model} is quantized already; calibrate the FP32 model it came from")
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer):
        raise CalibrationError(f"{model} is an FP16 model; calibrate the FP32 model it came from")
    if meta.approach != "bottom-up":
        # Its calibration data would be person crops and its accuracy check needs person boxes: not written yet.
        raise CalibrationError(f"{model} is a {meta.approach} model; rtpose calib calibrates bottom-up models only")
    return data, meta


def _check(model: onnx.ModelProto, what: str) -> None:
    problems = check_qdq(model)
    if problems:
        raise CalibrationError(f"{what} is not symmetric INT8 Q/DQ: {'; '.join(problems[:3])}")


def _save(model: onnx.ModelProto, path: Path, meta: ModelMeta) -> Path:
    write_onnx_meta(model, meta)
    onnx.save(model, str(path))
    return path


def _infer_all(path: Path, inputs: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    engine = OnnxRuntimeEngine(path)
    try:
        return [engine.infer(x) for x in inputs]
    finally:
        engine.close()


def _guard(reference: OnnxRuntimeEngine, full_path: Path, names: list[str], labels: dict[str, str],
           validation: ValidationSet, prepared: Path, ranges_file: Path, settings: Settings, meta: ModelMeta,
           max_ap_drop: float, workdir: Path, log: Callable[[str], None]) -> GuardResult:
    with Progress(2 * len(validation), "AP FP32 and INT8", "img") as bar:
        ap_fp32 = validation.ap(reference, bar.update)["AP"]
        engine = OnnxRuntimeEngine(full_path)
        ap_int8 = validation.ap(engine, bar.update)["AP"]
        engine.close()
    result = GuardResult(ap_fp32, ap_int8, ap_int8, max_ap_drop)
    if 100.0 * (ap_fp32 - ap_int8) <= max_ap_drop:
        return result
    log(f"INT8 loses {100.0 * (ap_fp32 - ap_int8):.1f} AP points (limit {max_ap_drop:g}): measuring each layer's "
        f"sensitivity")

    from rtpose.preprocess import preprocess
    inputs = [preprocess(im, meta)[0] for im in validation.images[:SENSITIVITY_IMAGES]]
    expected = [reference.infer(x) for x in inputs]

    def error_with_only(name: str) -> float:
        path = _save(quantize(prepared, ranges_file, settings, only=[name]), workdir / "one.onnx", meta)
        return output_error(expected, _infer_all(path, inputs))

    with Progress(len(names), "layer sensitivity", "layer") as bar:
        result.ranking = rank_layers(names, labels, error_with_only, bar.update)

    def ap_with_fp32(kept: list[str]) -> float:
        path = _save(quantize(prepared, ranges_file, settings, exclude=kept), workdir / "kept.onnx", meta)
        engine = OnnxRuntimeEngine(path)
        with Progress(len(validation), f"AP with {len(kept)} layers in FP32", "img") as bar:
            ap = validation.ap(engine, bar.update)["AP"]
        engine.close()
        return ap

    k, ap = smallest_exclusion(result.ranking, ap_with_fp32, ap_fp32, max_ap_drop, result.tried)
    if k >= len(result.ranking):
        raise CalibrationError(f"INT8 stays more than {max_ap_drop:g} AP points below FP32 ({ap_fp32:.3f}) unless "
                               f"every layer is kept in FP32; try another --method, more or more typical "
                               f"calibration images, or a larger --max-ap-drop")
    result.kept_fp32, result.ap_final = result.ranking[:k], ap
    return result


def _write(model: onnx.ModelProto, output: Path, meta: ModelMeta, report: CalibrationReport) -> None:
    meta = meta.with_versions(onnxruntime=ort.__version__, rtpose=rtpose.__version__)
    write_onnx_meta(model, meta)
    for entry in list(model.metadata_props):
        if entry.key == PRECISION_KEY:
            model.metadata_props.remove(entry)
    g = report.guard
    record = {"precision": "int8", "format": "qdq", "symmetric": True, "per_channel_weights": True,
              "method": report.method, "calibration_data": report.data, "calibration_images": report.images,
              "kept_fp32": [s.name for s in g.kept_fp32] if g else [],
              "ap_fp32": g.ap_fp32 if g else None, "ap_int8": g.ap_final if g else None,
              "validation": str(report.val) if report.val else None}
    model.metadata_props.add(key=PRECISION_KEY, value=json.dumps(record, sort_keys=True))
    model.producer_name = "rtpose calib"
    model.producer_version = rtpose.__version__
    onnx.checker.check_model(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(output)
