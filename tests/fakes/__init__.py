"""Faithful fakes of GPU libraries that cannot run on a machine without a GPU.

``install(monkeypatch)`` puts them where ``import tensorrt`` and
``from cuda.bindings import runtime`` (and the older ``from cuda import
cudart``) find them, and makes rtpose's TensorRT modules import afresh
against them; pytest's monkeypatch puts everything back after the test.
``install(monkeypatch, real_cuda=True)`` fakes TensorRT alone: on a machine
with a GPU and cuda-python, the engine's memory, copies and streams are real
(``fakes.real_cuda``).
"""

from __future__ import annotations

import sys
import types

from . import cudart, tensorrt

# Modules that import tensorrt or cudart at their top: imported again under the fakes, dropped after.
USERS = ("rtpose.engine.tensorrt_engine", "export.tensorrt_build")


def install(monkeypatch, real_cuda: bool = False) -> None:
    if real_cuda:
        from . import real_cuda as device_memory
        monkeypatch.setitem(sys.modules, "tensorrt", tensorrt)
        monkeypatch.setattr(tensorrt, "cudart", device_memory)
        forget_users(monkeypatch)
        return
    cudart.reset()
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda.bindings = bindings
    cuda.cudart = cudart
    for name, module in {"tensorrt": tensorrt, "cuda": cuda, "cuda.bindings": bindings,
                         "cuda.bindings.runtime": cudart, "cuda.cudart": cudart}.items():
        monkeypatch.setitem(sys.modules, name, module)
    forget_users(monkeypatch)


def forget_users(monkeypatch) -> None:
    for name in USERS:
        monkeypatch.delitem(sys.modules, name, raising=False)


def uninstall_users() -> None:
    """After a test: the modules imported under the fakes hold them; drop those modules."""
    for name in USERS:
        sys.modules.pop(name, None)
