"""What every error message in rtpose is cut down to."""


def first_line(exc: BaseException, default: str = "") -> str:
    """An exception's message up to its first line break; ``default`` for an empty message.

    CUDA's, torch's, onnxruntime's and YAML's messages run to several lines,
    and a command ends in one.
    """
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else default
