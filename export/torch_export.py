"""Checkpoint -> a self-contained torch program (``.pt2``, torch.export) with rtpose metadata inside.

The runtime's :class:`rtpose.engine.torch_engine.TorchEngine` loads it without
the trainer: the program holds the model's code (as aten operations) and
weights; ``extra_files["rtpose.json"]`` holds the :class:`ModelMeta`. Why
torch.export rather than TorchScript is said in the engine's module.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

import rtpose
from export.formats import with_input_size
from rtpose.engine.torch_engine import META_FILE, TorchEngine, as_outputs
from trainer.checkpoint import load_model

DEFAULT_MAX_BATCH = 256       # as the ONNX export


def export_torch(checkpoint: str | Path, output: str | Path, max_batch: int = DEFAULT_MAX_BATCH,
                 input_size: tuple[int, int] | None = None) -> Path:
    """Write ``output`` (.pt2): the checkpoint's model, exported in eval mode with a dynamic batch 1..max_batch,
    taking ``input_size`` (width, height) if given, else the training size."""
    if max_batch < 1:
        raise ValueError(f"--max-batch must be at least 1, got {max_batch}")
    model, meta, _ = load_model(checkpoint)
    meta = with_input_size(meta, input_size).with_versions(rtpose=rtpose.__version__, torch=torch.__version__)
    example = torch.zeros(min(2, max_batch), 3, meta.input_height, meta.input_width)
    batch = torch.export.Dim("batch", min=1, max=max_batch) if max_batch > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},) if batch else None)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(output), extra_files={META_FILE: meta.to_json()})
    return output


def check_torch_parity(checkpoint: str | Path, program: str | Path, batch: int = 2, seed: int = 0) -> str:
    """The exported program through TorchEngine (on CPU) against the checkpoint's model, as one line."""
    model, _, _ = load_model(checkpoint)
    engine = TorchEngine.from_file(program, device="cpu")
    meta = engine.meta                   # the exported input size
    x = np.random.default_rng(seed).standard_normal((batch, 3, meta.input_height, meta.input_width))
    x = x.astype(np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in as_outputs(model(torch.from_numpy(x)))]
    got = engine.infer(x)
    engine.close()
    diffs = ", ".join(f"{n} {float(np.abs(a - b).max()):.2e}" for n, a, b in zip(meta.output_names, expected, got))
    return f"torch program vs checkpoint, batch {batch}: max |diff| {diffs}"
