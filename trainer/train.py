"""The training loop: plain, as in the torchvision references.

``train`` builds everything from a :class:`TrainConfig`, then alternates
``train_one_epoch`` and validation, writing ``last.pt`` (and ``best.pt`` when
validation AP improves) after every epoch and one JSON line of metrics per
epoch to ``metrics.jsonl``. ``resume`` continues from a checkpoint's epoch
with its optimizer and scheduler.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from rtpose.progress import Progress
from trainer.annotations import load_keypoint_set, load_keypoint_sets
from trainer.checkpoint import CheckpointEngine, CheckpointError, read_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.data import PoseDataset
from trainer.evaluate import evaluate
from trainer.losses import focal_l2_loss, offset_l1_loss
from trainer.model import SimplePoseNet, load_weights


def train(config: TrainConfig, resume: str | Path | None = None, log=print) -> Path:
    """Train as ``config`` says; returns the path of the last checkpoint."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    train_set = load_keypoint_sets(config.train_annotations, config.train_images)
    if config.max_train_images:
        train_set.images = train_set.images[:config.max_train_images]
    val_set = (load_keypoint_set(config.val_annotations, config.val_images)
               if config.val_annotations else None)
    meta = config.model_meta(train_set.skeleton)
    model = SimplePoseNet(train_set.skeleton, config.model_config())
    if config.init_weights:
        load_weights(model, config.init_weights)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto"
                          else config.device)
    # Channels-last runs the convolutions about a quarter faster on CPU (measured).
    model.to(device, memory_format=torch.channels_last)

    dataset = PoseDataset(train_set, meta, seed=config.seed, augmentation=config.augmentation())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, drop_last=len(dataset) > config.batch_size,
        num_workers=config.workers, persistent_workers=False,
        generator=torch.Generator().manual_seed(config.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # The schedule is a function of the config, not state in the checkpoint,
    # so a run resumed with more epochs stretches it instead of failing.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.epochs * len(loader)))

    start_epoch, best_ap = 0, -1.0
    if resume:
        start_epoch, best_ap = _resume(resume, config, model, optimizer, scheduler)
        log(f"resumed from {resume} at epoch {start_epoch}")

    log(f"training {meta.architecture} on {device}, {len(train_set)} images of {config.train_annotations} "
        f"for {config.epochs} epochs; checkpoints in {out}")
    last = out / "last.pt"
    for epoch in range(start_epoch, config.epochs):
        dataset.epoch = epoch
        metrics = train_one_epoch(model, loader, optimizer, scheduler, config, epoch, device)
        if val_set is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            result = evaluate(CheckpointEngine(model, meta), val_set)
            model.train()
            metrics["val_AP"] = result.stats["AP"]
            log(f"epoch {epoch + 1}: validation AP {result.stats['AP']:.3f}")
        metrics["best_val_AP"] = best_ap = max(best_ap, metrics.get("val_AP", -1.0))
        save_checkpoint(last, model, optimizer, scheduler, epoch + 1, config, meta, metrics)
        if metrics.get("val_AP", -1.0) >= best_ap and "val_AP" in metrics:
            save_checkpoint(out / "best.pt", model, optimizer, scheduler, epoch + 1, config, meta, metrics)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch + 1, **metrics}) + "\n")
    return last


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.05, final: float = 0.02):
    """Learning-rate factor per step: linear warm-up, then cosine down to ``final``."""
    warmup = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(1, total_steps - warmup), 1.0)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def train_one_epoch(model, loader, optimizer, scheduler, config: TrainConfig, epoch: int, device) -> dict:
    model.train()
    sums = {"loss": 0.0, "heatmap_loss": 0.0, "offset_loss": 0.0, "refinement_loss": 0.0}
    started = time.perf_counter()
    with Progress(len(loader), f"epoch {epoch + 1}/{config.epochs}", unit="batch") as bar:
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            heatmaps, offsets, refinements = model(batch["image"].to(memory_format=torch.channels_last))
            heatmap_loss = focal_l2_loss(heatmaps, batch["heatmaps"], batch["heatmap_mask"])
            offset_loss = offset_l1_loss(offsets, batch["offsets"], batch["offset_mask"])
            refinement_loss = offset_l1_loss(refinements, batch["refinements"], batch["refinement_mask"])
            loss = (heatmap_loss + config.offset_loss_weight * offset_loss
                    + config.refinement_loss_weight * refinement_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for name, value in (("loss", loss), ("heatmap_loss", heatmap_loss), ("offset_loss", offset_loss),
                                ("refinement_loss", refinement_loss)):
                sums[name] += value.item()
            bar.update(1, f"loss {loss.item():.3f} (heatmaps {heatmap_loss.item():.3f} offsets {offset_loss.item():.3f})")
    n = max(len(loader), 1)
    seconds = time.perf_counter() - started
    return {**{k: v / n for k, v in sums.items()}, "lr": scheduler.get_last_lr()[0],
            "seconds": round(seconds, 1), "images_per_second": round(len(loader.dataset) / seconds, 1)}


def _resume(path, config: TrainConfig, model, optimizer, scheduler) -> tuple[int, float]:
    ckpt = read_checkpoint(path)
    if ckpt["config"].get("widths") != list(config.widths) or ckpt["config"].get("blocks") != list(config.blocks):
        raise CheckpointError(f"{path} was trained with another architecture than this config describes")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return int(ckpt["epoch"]), float(ckpt.get("metrics", {}).get("best_val_AP", -1.0))
