"""``processes: N`` in a config: training in N processes on this machine, joined as torchrun joins them.

``rtpose train`` starts them itself (torch.multiprocessing, spawn) and
gives each the environment torchrun would (RANK, LOCAL_RANK, WORLD_SIZE
and a free loopback port), so :func:`trainer.train.train` runs unchanged:
one GPU each on CUDA, gloo on CPU (where N single-threaded processes ran
5% faster than one process with N threads on 2 cores; benchmarks/README.md,
"Distributed and mixed precision").

A process that fails hands its error back in one line, and the command
ends with that line, once, instead of one traceback per process.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import traceback
from pathlib import Path

import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

from rtpose.cli import error_message
from trainer.config import TrainConfig


def train_in_processes(config: TrainConfig, resume: str | Path | None = None) -> Path:
    """Run :func:`trainer.train.train` in ``config.processes`` processes; the path of the last checkpoint."""
    context = mp.get_context("spawn")
    errors = context.SimpleQueue()
    # When one process fails, torch stops the others and logs a warning for each: the error says enough.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    try:
        mp.start_processes(_process, args=(config, resume, _free_port(), errors), nprocs=config.processes,
                           start_method="spawn")
    except ProcessException as exc:
        reported = []
        while not errors.empty():
            reported.append(errors.get())
        if reported:                      # rank 0's first: the others usually fail the same way
            raise RuntimeError(min(reported)[1]) from None
        raise RuntimeError(f"a training process ended without a word: {exc}") from None
    return Path(config.output_dir) / "last.pt"


def _process(rank: int, config: TrainConfig, resume, port: int, errors) -> None:
    from trainer.train import train
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(config.processes))
    try:
        train(config, resume, log=lambda message: print(message, file=sys.stderr, flush=True))
    except Exception as exc:  # noqa: BLE001 - handed back to the parent as one line
        if os.environ.get("RTPOSE_DEBUG"):
            traceback.print_exc()
        errors.put((rank, error_message(exc)))     # the line the command would end with in one process
        raise SystemExit(1) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
