"""The export table: every format, the file it writes and the options it accepts.

Options are checked against this table before any work starts, so a wrong
combination fails in one line instead of after a long build.
"""

from __future__ import annotations

from dataclasses import dataclass


class ExportError(ValueError):
    pass


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    options: frozenset[str]
    needs: str                  # what must be installed, for the error message


FORMATS = {
    f.name: f for f in (
        ExportFormat("onnx", ".onnx", frozenset({"opset", "check", "input_format", "peak_top_k"}),
                     "torch, onnx, onnxruntime, onnxscript "
                     "(only onnx to convert an .onnx's input format or add peaks)"),
        # torch.export program (.pt2) with the metadata inside; runs in rtpose's TorchEngine.
        ExportFormat("torch", ".pt2", frozenset({"max_batch"}), "torch"),
        # rtpose header + TensorRT plan; from a checkpoint or an .onnx. Input uint8 BGR unless told otherwise.
        ExportFormat("tensorrt", ".engine", frozenset({"opset", "max_batch", "workspace", "input_format"}),
                     "TensorRT and cuda-python: pip install 'rtpose[tensorrt]' on a machine with NVIDIA's packages "
                     "(and torch, from a checkpoint)"),
    )
}


def check_request(format_name: str, options: dict) -> ExportFormat:
    """The format for ``format_name``, after checking that every option given applies to it."""
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise ExportError(f"unknown export format '{format_name}' (known: {', '.join(FORMATS)})")
    given = {k for k, v in options.items() if v is not None}
    wrong = sorted(given - fmt.options)
    if wrong:
        raise ExportError(f"format '{fmt.name}' does not take --{wrong[0].replace('_', '-')} "
                          f"(it takes: {', '.join('--' + o for o in sorted(fmt.options))})")
    return fmt
