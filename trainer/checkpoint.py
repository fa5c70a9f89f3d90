"""Checkpoints: what they hold, how they load, and an engine that runs one."""

from __future__ import annotations

from pathlib import Path

import torch

from rtpose.engine.torch_engine import TorchEngine
from rtpose.errors import first_line
from rtpose.model_meta import ModelMeta
from trainer.config import TrainConfig, config_from_dict


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, config: TrainConfig,
                    meta: ModelMeta, metrics: dict, scaler=None, ema=None) -> None:
    """``model`` holds the weights to use: the EMA's when there is one (the raw ones then go to
    ``training_model``, for resuming)."""
    tmp = path.with_suffix(".tmp")
    extra = ({"training_model": model.state_dict(), "ema_updates": int(ema.n_averaged)}
             if ema is not None else {})
    torch.save({
        "model": (ema.module if ema is not None else model).state_dict(),
        **extra,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,                 # epochs completed
        "config": config.to_dict(),
        "meta": meta.to_json(),
        "metrics": metrics,
        "scaler": scaler.state_dict() if scaler is not None else {},   # empty unless float16 AMP
    }, tmp)
    tmp.replace(path)                   # never leave a half-written checkpoint behind


def read_checkpoint(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise CheckpointError(f"{p} is not an rtpose checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not {"model", "config", "meta"} <= set(ckpt):
        raise CheckpointError(f"{p} is not an rtpose checkpoint (no model/config/meta)")
    return ckpt


def load_model(path: str | Path) -> tuple[torch.nn.Module, ModelMeta, TrainConfig]:
    """The model of a checkpoint, in eval mode, with its metadata and training config."""
    ckpt = read_checkpoint(path)
    config = config_from_dict(ckpt["config"], f"{path} (config)")
    meta = ModelMeta.from_json(ckpt["meta"])
    model = config.build_model(meta.skeleton)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the {meta.architecture} architecture "
                              f"({first_line(exc)})") from None
    return model.eval(), meta, config


class CheckpointEngine(TorchEngine):
    """A checkpoint's model behind the runtime's Engine interface: the runtime's TorchEngine over the trainer's module.

    Made from a live model (validation during training), it runs on that
    model's device and leaves its weights as they are (no fp16, no layout
    change); made from a file, TorchEngine's defaults apply (CUDA when there
    is one). ``options`` are TorchEngine's.
    """

    def __init__(self, model: torch.nn.Module, meta: ModelMeta, **options) -> None:
        options = {"device": str(next(model.parameters()).device), "channels_last": False, **options}
        super().__init__(model.eval(), meta, **options)
        self.model = model

    @classmethod
    def from_file(cls, path: str | Path, **options) -> "CheckpointEngine":
        model, meta, _ = load_model(path)
        return cls(model, meta, **{"device": None, "channels_last": None, **options})
