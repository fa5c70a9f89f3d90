"""Faithful fakes of GPU libraries that cannot run on a machine without a GPU.

``install(monkeypatch)`` puts them where ``import tensorrt`` and
``from cuda.bindings import runtime`` (and the older ``from cuda import
cudart``) find them, and makes rtpose's TensorRT modules import afresh
against them; pytest's monkeypatch puts everything back after the test.
"""

from __future__ import annotations

import sys
import types

from . import cudart, tensorrt

# Modules that import tensorrt or cudart at their top: imported again under the fakes, dropped after.
USERS = ("rtpose.engine.tensorrt_engine", "export.tensorrt_build")


def install(monkeypatch) -> None:
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
