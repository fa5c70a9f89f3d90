"""torch backend: an exported torch program (``.pt2``), or the trainer's model, on CUDA or CPU.

The file format is torch.export's ``.pt2`` with the :class:`ModelMeta` JSON
inside (``extra_files["rtpose.json"]``), written by ``rtpose export --format
torch``. Why not TorchScript: in torch 2.13 ``torch.jit.trace`` and
``torch.jit.script`` are deprecated (each call warns so) and torch.export is
the supported way to save a model's code with its weights. A loaded program is
an ordinary ``nn.Module`` of aten operations with no Python control flow, so
``.to("cuda")``, ``.half()`` and ``channels_last`` apply to it as to any
module and a CUDA graph captures its forward whole. Its batch range comes from
the export (guards check it), and it needs neither ``trainer`` nor the
model's Python class: the runtime may not import ``trainer``.

Options (CUDA only where said):

- ``device``: ``"cuda"`` when torch sees a GPU, else ``"cpu"``;
- ``fp16`` (CUDA): weights and input in half precision; outputs come back as float32;
- ``channels_last`` (default on CUDA): NHWC memory layout, which cuDNN's convolutions prefer;
- ``cuda_graphs`` (CUDA): one graph captured per input shape, replayed after.

Status: the CPU path is tested on every machine (parity with onnxruntime on
the same checkpoint); the CUDA, FP16 and CUDA-graph paths by
``tests/test_gpu.py``, which runs where torch sees a GPU (it passed on an
H100 with torch 2.11; timings in benchmarks/README.md, "CUDA").
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from rtpose.engine import EngineError
from rtpose.errors import first_line
from rtpose.model_meta import FLOAT32_NCHW_RGB, ModelMeta

META_FILE = "rtpose.json"        # the metadata's name inside the .pt2 archive
TORCH_SUFFIXES = (".pt2",)
_WARMUP_RUNS = 3                 # before a CUDA graph capture: cuDNN picks kernels, the allocator settles


class TorchEngine:
    """The Engine interface over a torch module that maps ``[N, 3, H, W]`` float32 to the model's outputs."""

    def __init__(self, module: torch.nn.Module, meta: ModelMeta, device: str | None = None, fp16: bool = False,
                 channels_last: bool | None = None, cuda_graphs: bool = False, threads: int = 0,
                 max_batch: int | None = None) -> None:
        if meta.input_format != FLOAT32_NCHW_RGB:
            raise EngineError(f"the torch engine takes '{FLOAT32_NCHW_RGB}' input, not '{meta.input_format}'")
        self.meta, self.max_batch = meta, max_batch
        self.device = _device(device, fp16, cuda_graphs)
        on_cuda = self.device.type == "cuda"
        self.fp16, self.cuda_graphs = fp16, cuda_graphs
        self.channels_last = on_cuda if channels_last is None else channels_last
        if threads and not on_cuda:
            torch.set_num_threads(threads)    # process-wide: torch has no per-module thread setting
        self.threads = "none (CUDA)" if on_cuda else threads or "default (torch's)"
        module = module.to(self.device)
        if fp16:
            module = module.half()
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self._graphs: dict[tuple[int, ...], tuple] = {}              # input shape -> (graph, input, outputs)
        self.providers = [f"torch {torch.__version__} {self.device}" + "".join(
            f" {flag}" for flag, on in (("fp16", fp16), ("channels-last", self.channels_last),
                                       ("cuda-graphs", cuda_graphs)) if on)]

    @classmethod
    def from_file(cls, path: str | Path, **options) -> "TorchEngine":
        """A ``.pt2`` written by ``rtpose export --format torch``."""
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"model file not found: {path}")
        _device(options.get("device"), options.get("fp16", False), options.get("cuda_graphs", False))  # before loading
        extra = {META_FILE: ""}
        try:
            with warnings.catch_warnings():
                # torch 2.11 warns on every load that it reads weights from a read-only buffer (its own).
                warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
                program = torch.export.load(str(path), extra_files=extra)
        except Exception as exc:  # torch raises many types for a file that is not a .pt2 program
            first = first_line(exc, type(exc).__name__)
            raise EngineError(f"{path} is not a torch.export program ({type(exc).__name__}: {first})") from None
        if not extra[META_FILE]:
            raise EngineError(f"{path} is not an rtpose model (no {META_FILE} in the archive); "
                              f"make one with: rtpose export <checkpoint> --format torch --output model.pt2")
        try:
            meta = ModelMeta.from_json(extra[META_FILE])
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"{path}: unreadable rtpose metadata ({exc})") from None
        return cls(program.module(), meta, max_batch=_batch_limit(program), **options)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.module is None:
            raise EngineError("the torch engine is closed")
        batch = np.asarray(batch)
        sample = (3, self.meta.input_height, self.meta.input_width)
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != sample:
            raise EngineError(f"the torch engine takes float32 [N, {', '.join(map(str, sample))}]; "
                              f"got {batch.dtype} {list(batch.shape)}")
        if self.max_batch is not None and not 1 <= batch.shape[0] <= self.max_batch:
            raise EngineError(f"a batch of {batch.shape[0]} is outside this model's range 1..{self.max_batch}, "
                              f"fixed when it was exported (rtpose export --format torch --max-batch N)")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch))
            outputs = self._replay(x) if self.cuda_graphs else self.module(self._to_device(x))
            return tuple(_to_numpy(t) for t in as_outputs(outputs))

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        if self.fp16:
            x = x.half()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _replay(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """CUDA only: capture a graph for this input shape once, then copy in and replay.

        As PyTorch's CUDA-graph notes prescribe: warm up on a side stream,
        capture with static input and output tensors, then per call copy the
        new input into the static one and replay; the outputs are the static
        tensors, overwritten by the next replay (``_to_numpy`` copies them).
        """
        key = tuple(x.shape)
        if key not in self._graphs:
            static_input = self._to_device(x).clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(_WARMUP_RUNS):
                    self.module(static_input)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the pipeline's other threads may touch CUDA while this one captures.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_outputs = as_outputs(self.module(static_input))
            self._graphs[key] = (graph, static_input, static_outputs)
        graph, static_input, static_outputs = self._graphs[key]
        static_input.copy_(x)           # host -> device, float32 -> half, NCHW -> channels-last, in one copy
        graph.replay()
        return static_outputs

    def close(self) -> None:
        self._graphs = {}
        self.module = None


def _device(device: str | None, fp16: bool, cuda_graphs: bool) -> torch.device:
    """The device asked for (default: CUDA when torch sees a GPU), after checking the options fit it."""
    resolved = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device '{resolved}' asked for, but torch sees no CUDA GPU")
    if fp16 and resolved.type != "cuda":
        raise EngineError(f"fp16 runs only on a CUDA device (this engine's device is {resolved})")
    if cuda_graphs and resolved.type != "cuda":
        raise EngineError(f"CUDA graphs need a CUDA device (this engine's device is {resolved})")
    return resolved


def as_outputs(outputs) -> tuple:
    """A model's outputs as a tuple: a model with one output (PoseResNet) returns a bare tensor."""
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """Float outputs as float32 (fp16 ones included), integer outputs (peak cells) as they are; on the host, in order.

    A channels-last module's outputs are channels-last too; they are put back
    in NCHW order where they are (on the GPU, before the copy), because the
    decoder reads the maps channel by channel: on strided arrays it took 2.6 ms
    a frame of vtest.avi against 2.1 on a 2-core CPU (benchmarks/README.md, "CUDA").
    """
    if t.is_floating_point():
        t = t.float()
    return t.contiguous().cpu().numpy()


def _batch_limit(program) -> int | None:
    """The largest batch the exported program's guards accept (None: no upper bound found)."""
    try:
        name = program.graph_signature.user_inputs[0]
        node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
        size = node.meta["val"].shape[0]
        if isinstance(size, int):
            return size                    # exported with a fixed batch
        return int(program.range_constraints[size.node.expr].upper)
    except (StopIteration, KeyError, IndexError, TypeError, AttributeError, ValueError):
        return None
