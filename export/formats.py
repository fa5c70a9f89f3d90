"""The export table: every format, the file it writes and the options it accepts.

Options are checked against this table before any work starts, so a wrong
combination fails in one line instead of after a long build: an option the
format does not take, or a value the option does not take.

Precision: ``onnx`` writes FP32 or FP16 (``--precision fp16``); an INT8
ONNX needs calibration images and is made by ``rtpose calib`` (calib/),
which checks its own inputs the same way; ``tensorrt`` builds any of the
three, strongly typed, from the precision in the ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rtpose.model_meta import INPUT_FORMATS, ModelMeta


class ExportError(ValueError):
    pass


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    options: frozenset[str]
    needs: str                  # what must be installed, for the error message
    choices: dict = field(default_factory=dict)     # option -> the values it takes
    hints: dict = field(default_factory=dict)       # (option, value) -> what to do instead


INT8_HINT = ("INT8 needs calibration images: rtpose calib MODEL.onnx --data <folder, video, COCO-format dataset "
             "or synthetic> --output model_int8.onnx, then --format tensorrt from that file")

FORMATS = {
    f.name: f for f in (
        # FP32, or FP16 with FP32 inputs and outputs; INT8 comes from rtpose calib (it needs images).
        ExportFormat("onnx", ".onnx", frozenset({"opset", "input_format", "peak_top_k", "precision",
                                                 "check_images", "input_size"}),
                     "torch, onnx, onnxruntime, onnxscript "
                     "(only onnx and onnxruntime to convert an .onnx's input format or precision, or add peaks)",
                     choices={"input_format": INPUT_FORMATS, "precision": ("fp32", "fp16")},
                     hints={("precision", "int8"): INT8_HINT}),
        # torch.export program (.pt2) with the metadata inside; runs in rtpose's TorchEngine.
        ExportFormat("torch", ".pt2", frozenset({"max_batch", "input_size"}), "torch"),
        # rtpose header (metadata + build record) + TensorRT plan; from a checkpoint or an .onnx (FP32, FP16 or
        # rtpose calib's INT8 Q/DQ). Strongly typed: the precision is the graph's. Input uint8 BGR unless told.
        ExportFormat("tensorrt", ".engine", frozenset({"opset", "min_batch", "max_batch", "workspace", "input_format",
                                                       "precision", "timing_cache"}),
                     "TensorRT and cuda-python: pip install 'rtpose[tensorrt]' on a machine with NVIDIA's packages "
                     "(and torch, from a checkpoint)",
                     choices={"input_format": INPUT_FORMATS, "precision": ("fp32", "fp16", "int8")}),
    )
}


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def check_request(format_name: str, options: dict) -> ExportFormat:
    """The format for ``format_name``, after checking that every option given applies to it and has a value it takes."""
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise ExportError(f"unknown export format '{format_name}' (known: {', '.join(FORMATS)})")
    given = {k for k, v in options.items() if v is not None}
    wrong = sorted(given - fmt.options)
    if wrong:
        raise ExportError(f"format '{fmt.name}' does not take {_flag(wrong[0])} "
                          f"(it takes: {', '.join(_flag(o) for o in sorted(fmt.options))})")
    for option, allowed in fmt.choices.items():
        value = options.get(option)
        if value is not None and value not in allowed:
            hint = fmt.hints.get((option, value))
            raise ExportError(hint or f"{_flag(option)} for format '{fmt.name}' is one of {', '.join(allowed)}, "
                                      f"not '{value}'")
    return fmt


def parse_input_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(W, H)``, both multiples of 32 (the models' coarsest stride)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-size is WIDTHxHEIGHT, e.g. 512x512, not '{text}'") from None
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        raise ValueError(f"--input-size {text}: width and height must be positive multiples of 32")
    return width, height


def with_input_size(meta: ModelMeta, size: tuple[int, int] | None) -> ModelMeta:
    """The metadata of the same model taking another input size (the models are fully convolutional)."""
    return meta if size is None else replace(meta, input_width=size[0], input_height=size[1])
