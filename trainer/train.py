"""The training loop: plain, as in the torchvision references.

``train`` builds everything from a :class:`TrainConfig`, then alternates
``train_one_epoch`` and validation, writing ``last.pt`` (and ``best.pt`` when
validation AP improves) after every epoch and one JSON line of metrics per
epoch to ``metrics.jsonl``. ``resume`` continues from a checkpoint's epoch
with its optimizer, scheduler and gradient scaler. The same figures go to
TensorBoard event files in ``tensorboard/`` (``tensorboard --logdir``).

``max_minutes`` bounds a run by wall time instead of epochs alone
(:class:`TimeBudget`): the learning-rate schedule then runs on elapsed time,
and training stops, validates and saves in time to end within the budget.

The same function runs one process or many: started by ``torchrun`` (which
sets RANK, WORLD_SIZE and LOCAL_RANK) it joins the process group (NCCL on
CUDA, gloo on CPU), gives each process its share of every epoch through a
DistributedSampler and wraps the model in DistributedDataParallel. Only rank
0 validates and writes checkpoints, metrics and progress; the others wait for
it at a barrier. ``batch_size`` is per process, so the global batch is
``batch_size * WORLD_SIZE``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from rtpose.engine.torch_engine import as_outputs
from rtpose.model_meta import ModelMeta
from rtpose.progress import Progress
from trainer.annotations import load_keypoint_set, load_keypoint_sets
from trainer.checkpoint import CheckpointEngine, CheckpointError, read_checkpoint, save_checkpoint
from trainer.config import ConfigError, TrainConfig
from trainer.data import PoseDataset, network_batch
from trainer.evaluate import evaluate, gt_boxes
from trainer.losses import focal_l2_loss, joints_mse_loss, offset_l1_loss
from trainer.model import load_weights
from trainer.pose_resnet import load_backbone_weights
from trainer.tensorboard_log import EVENT_FILE_PREFIX, ScalarLog
from trainer.topdown_data import TopDownDataset


def train(config: TrainConfig, resume: str | Path | None = None, log=print) -> Path:
    """Train as ``config`` says; returns the path of the last checkpoint."""
    rank, world, local_rank = _init_distributed(config)
    try:
        last = _train(config, resume, log if rank == 0 else (lambda message: None), rank, world, local_rank)
        if world > 1:
            # A finished run tears the group down in every process together: one that did so while
            # rank 0 was still closing its logs sometimes aborted at exit (gloo, 2 processes on CPU:
            # 2 test runs in 21). Not after a failure, where the others may never arrive.
            dist.barrier()
        return last
    finally:
        if world > 1:
            dist.destroy_process_group()


def _init_distributed(config: TrainConfig) -> tuple[int, int, int]:
    """Join torchrun's process group when there is one; (rank, world size, local rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    if cuda:
        gpus, here = torch.cuda.device_count(), int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if here > gpus:                 # every process says so, not only those without a GPU
            raise ConfigError(f"{here} processes on CUDA need a GPU each, and this machine has {gpus}: "
                              f"set processes: {gpus} or fewer, or device: cpu")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return rank, world, local_rank


def _train(config: TrainConfig, resume, log, rank: int, world: int, local_rank: int) -> Path:
    # Every process starts from the same seed, so the replicas begin with the
    # same weights (DDP broadcasts rank 0's anyway) and the same augmentation
    # stream per sample; the DistributedSampler decides who sees which sample.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    train_set = load_keypoint_sets(config.train_annotations, config.train_images)
    if config.max_train_images:
        train_set.images = train_set.images[:config.max_train_images]
    val_set = (load_keypoint_set(config.val_annotations, config.val_images)
               if config.val_annotations and rank == 0 else None)
    meta = config.model_meta(train_set.skeleton)
    model = config.build_model(train_set.skeleton)
    if config.init_weights:
        load_weights(model, config.init_weights)
    if config.backbone_weights:
        load_backbone_weights(model, config.backbone_weights)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto"
                          else config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {config.device}, but torch sees no CUDA GPU (device: auto picks the CPU then)")
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)       # one GPU per process
    if config.amp and device.type not in ("cuda", "cpu"):
        raise ConfigError(f"amp: mixed precision is built for cuda (float16) and cpu (bfloat16), not {device.type}")
    config = usable_amp(config, device, log)
    memory_format, layout_note = training_memory_format(model, device)
    model.to(device, memory_format=memory_format)

    dataset = training_dataset(config, train_set, meta)
    # Each process takes every WORLD_SIZE-th sample of one shared shuffle
    # (padded with repeats so all take the same number of steps).
    sampler = (torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                                   seed=config.seed)
               if world > 1 else None)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
        drop_last=len(dataset) // world > config.batch_size, num_workers=config.workers, persistent_workers=False,
        generator=torch.Generator().manual_seed(config.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    budget = TimeBudget(config.max_minutes, validates=config.val_annotations is not None)
    # The schedule is a function of the config (and of the time budget's clock), not state in the
    # checkpoint, so a run resumed with more epochs stretches it instead of failing.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.epochs * len(loader), budget=budget))
    # float16 needs loss scaling against underflowing gradients; bfloat16 (CPU) has float32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
    # An exponential moving average of the weights (and batch-norm statistics): what validation,
    # checkpoints' "model" and so export see when ema_decay > 0; training goes on with the raw weights.
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=warmup_ema(config.ema_decay), use_buffers=True)
           if config.ema_decay else None)

    start_epoch, best = 0, -1.0       # best validation figure so far (AP, or PCKh on MPII)
    if resume:
        start_epoch, best, spent = _resume(resume, config, meta, model, optimizer, scheduler, scaler, ema)
        budget.restart(spent)
        log(f"resumed from {resume} at epoch {start_epoch}")
    module = model                       # the bare model: what checkpoints and validation use
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)

    if layout_note:
        log(layout_note)
    samples = f"{len(dataset)} people in " if config.top_down else ""
    log(f"training {meta.architecture} on {device}" + (f" x {world} processes" if world > 1 else "")
        + f", {samples}{len(train_set)} images of {config.train_annotations} "
        + (f"for {config.max_minutes:g} minutes (at most {config.epochs} epochs)" if budget
           else f"for {config.epochs} epochs") + f"; checkpoints in {out}")
    if rank == 0 and not resume:
        _clear_earlier_run(out, log)    # here, once the inputs have loaded: a failed start leaves it alone
    last = out / "last.pt"
    # The same figures as metrics.jsonl, for TensorBoard (tensorboard --logdir OUT/tensorboard).
    board = ScalarLog(out / "tensorboard", start_step=start_epoch + 1 if resume else None) if rank == 0 else None
    criterion = loss_function(config, log)     # compiled once, when compile_loss asks for it
    for epoch in range(start_epoch, config.epochs):
        if budget.spent:                 # a resumed run that had used its time
            log(f"the time budget of {config.max_minutes:g} minutes is spent: nothing left to train")
            break
        dataset.epoch = epoch
        if sampler is not None:
            sampler.set_epoch(epoch)
        metrics = train_one_epoch(model, loader, optimizer, scheduler, criterion, config, epoch, device, scaler,
                                  show_progress=rank == 0, ema=ema, budget=budget, memory_format=memory_format)
        if world > 1:
            _average_buffers(module, world)
        budget.tick()
        stop = budget.spent              # the same in every process: rank 0's clock
        if rank == 0:
            value = None                 # this epoch's validation figure, if it validates
            # On a time budget the first epoch validates too: how long validating takes is what the
            # final validation needs kept for it.
            due = (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs or stop
            if val_set is not None and (due or (budget and not budget.longest_validation)):
                evaluated = ema.module if ema else module
                started = time.monotonic()
                name, value = validate(CheckpointEngine(evaluated, meta), val_set, config.top_down)
                budget.validated(time.monotonic() - started)
                evaluated.train()
                metrics[f"val_{name}"] = value
                log(f"epoch {epoch + 1}: validation {name} {value:.3f}")
            metrics["best_val"] = best = max(best, -1.0 if value is None else value)
            metrics["elapsed_seconds"] = round(budget.elapsed_now(), 1)
            save_checkpoint(last, module, optimizer, scheduler, epoch + 1, config, meta, metrics, scaler, ema)
            if value is not None and value >= best:
                save_checkpoint(out / "best.pt", module, optimizer, scheduler, epoch + 1, config, meta, metrics,
                                scaler, ema)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"epoch": epoch + 1, **metrics}) + "\n")
            for name, value in metrics.items():
                if name not in ("seconds", "best_val"):
                    board.add(f"val/{name[4:]}" if name.startswith("val_") else f"train/{name}", value, epoch + 1)
        if world > 1:
            dist.barrier()               # the others wait while rank 0 validates and saves
        if stop:
            log(f"time budget of {config.max_minutes:g} minutes reached in epoch {epoch + 1}: "
                f"stopped after {metrics['steps']} of its {len(loader)} steps")
            break
    if board is not None:
        board.close()
    if dump := os.environ.get("RTPOSE_DUMP_REPLICA_WEIGHTS"):
        # Debug/test hook: each process writes its own replica's weights, so a
        # test can check that DDP kept them identical.
        Path(dump).mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), Path(dump) / f"rank{rank}.pt")
    return last


def _average_buffers(module: torch.nn.Module, world: int) -> None:
    """Average the batch-norm running statistics over the replicas.

    DDP keeps the parameters identical but each replica's running statistics
    see only its own batches (DDP copies rank 0's before each forward, so
    every other process's would be lost). Averaging them once an epoch makes
    the replicas identical in every tensor and lets the checkpoint's
    statistics come from all the data.
    """
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world


def _clear_earlier_run(out: Path, log) -> None:
    """A fresh run into ``out`` replaces an earlier run's metrics and TensorBoard logs, as it does its checkpoints."""
    earlier = [p for p in (out / "metrics.jsonl", *sorted((out / "tensorboard").glob(EVENT_FILE_PREFIX + "*")))
               if p.exists()]
    for path in earlier:
        path.unlink()
    if earlier:
        log(f"{out} held an earlier run: its metrics and logs are replaced (--resume continues a run instead)")


def training_dataset(config: TrainConfig, train_set, meta: ModelMeta) -> torch.utils.data.Dataset:
    """Top-down: one sample per labelled person (its crop); bottom-up: one per image."""
    if config.top_down:
        return TopDownDataset(train_set, meta, seed=config.seed, augmentation=config.augmentation())
    return PoseDataset(train_set, meta, seed=config.seed, augmentation=config.augmentation(),
                       min_sigma=config.heatmap_min_sigma)


def training_memory_format(model: torch.nn.Module, device: torch.device) -> tuple[torch.memory_format, str]:
    """Channels-last, which runs the convolutions about a quarter faster on CPU (measured), where it is
    safe; with a line to say why not where it is not.

    On CPU, oneDNN's (torch 2.13) backward of a 1x1 convolution of stride 2
    over fewer than 16 input channels in channels-last corrupts the heap on a
    CPU with AVX-512: the first backward ends the process (seen on an AMD EPYC
    with AVX-512; 16 channels and more, NCHW, or oneDNN held to AVX2 are
    fine). Models that narrow, small ones made for tests, train in NCHW there.
    """
    if device.type == "cpu":
        narrow = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
                  and max(m.stride) > 1 and m.in_channels < 16]
        if narrow:
            return torch.contiguous_format, (
                f"channels-last off: a strided 1x1 convolution over {narrow[0].in_channels} channels "
                f"(fewer than 16) crashes oneDNN's channels-last backward on some CPUs; training in NCHW")
    return torch.channels_last, ""


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.05, final: float = 0.02,
                  budget: "TimeBudget | None" = None):
    """Learning-rate factor per step: linear warm-up, then cosine down to ``final``.

    With a time ``budget`` the run is as far along as the further of its
    steps and its clock, so the schedule ends when either runs out.
    """
    warmup = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        clock = budget.fraction if budget else 0.0
        if step < warmup and clock < warmup_fraction:
            return max((step + 1) / warmup, clock / warmup_fraction)
        progress = max(min((step - warmup) / max(1, total_steps - warmup), 1.0),
                       (clock - warmup_fraction) / (1 - warmup_fraction))
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


class TimeBudget:
    """A run's wall-clock budget (``max_minutes``; 0 = none): how far along it is, and when to stop.

    Time counts from the start of training, validations included, plus what
    the run had spent before a resume. The final validation and checkpoint
    must fit in what is left: the run stops once less remains than 1.5 times
    the longest validation so far (a budgeted run validates after its first
    epoch; 3% of the budget before that) plus 1% of the budget. In several
    processes rank 0's clock is the one: each step its reading goes to all,
    so every replica takes the same learning rate and stops at the same step.
    """

    def __init__(self, minutes: float, validates: bool = True) -> None:
        self.seconds = 60.0 * minutes
        self.guess = 0.03 * self.seconds if validates else 0.0   # for the final validation, before any
        self.longest_validation = 0.0
        self.restart(0.0)

    def restart(self, spent: float) -> None:
        """Start the clock, ``spent`` seconds already used (a resumed run)."""
        self.started = time.monotonic() - spent
        self.elapsed = spent

    def __bool__(self) -> bool:
        return self.seconds > 0

    def elapsed_now(self) -> float:
        return time.monotonic() - self.started

    def validated(self, seconds: float) -> None:
        self.longest_validation = max(self.longest_validation, seconds)

    def tick(self) -> None:
        """Read the clock, rank 0's in several processes; once per step and once after each epoch."""
        if not self:
            return
        nccl = dist.is_initialized() and dist.get_backend() == "nccl"      # NCCL broadcasts GPU tensors only
        reading = torch.tensor([self.elapsed_now(), self.longest_validation], dtype=torch.float64,
                               device="cuda" if nccl else "cpu")
        if dist.is_initialized():
            dist.broadcast(reading, src=0)
        self.elapsed, self.longest_validation = reading.tolist()

    @property
    def usable(self) -> float:
        """Seconds of the budget for training: what the final validation and checkpoint leave."""
        final_validation = 1.5 * self.longest_validation if self.longest_validation else self.guess
        return self.seconds - final_validation - 0.01 * self.seconds

    @property
    def fraction(self) -> float:
        """How far along the budget the run is, 0 to 1 (0 without a budget)."""
        return min(1.0, self.elapsed / max(self.usable, 1e-9)) if self else 0.0

    @property
    def spent(self) -> bool:
        return bool(self) and self.elapsed >= self.usable


def validate(engine: CheckpointEngine, val_set, top_down: bool) -> tuple[str, float]:
    """The validation figure's name and value: COCO AP, or on an MPII list file the mean PCKh@0.5 (0-1).

    Top-down models are validated on the annotated boxes: their keypoints, not a detector's boxes.
    """
    if not val_set.is_coco_format:
        from trainer.pckh import evaluate_pckh
        return "PCKh", evaluate_pckh(engine, val_set)["mean"] / 100
    return "AP", evaluate(engine, val_set, boxes=gt_boxes if top_down else None).stats["AP"]


def warmup_ema(decay: float):
    """EMA update with the decay ramped up as min(decay, (1 + n) / (10 + n)) after n updates.

    A fixed decay of 0.999 would keep a third of the initial weights in the
    average after 1,000 steps; early in training the weights change fast and
    such an average is no model at all (AP 0 after an epoch, where the raw
    weights had 0.11). The ramp (TensorFlow's ExponentialMovingAverage
    ``num_updates``) makes the average follow closely at first.
    """
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(updates)) / (10.0 + float(updates)))
        for a, c in zip(averaged, current):
            if torch.is_floating_point(a):
                a.lerp_(c, 1.0 - d)
            else:                     # integer buffers (batch counts): the latest
                a.copy_(c)
    return update


def cpu_bfloat16_is_fast() -> bool:
    """torch's own test for oneDNN's bfloat16 kernels: AVX-512 (BW, VL, DQ) on x86, BF16 on Arm."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def usable_amp(config: TrainConfig, device: torch.device, log=print) -> TrainConfig:
    """``config``, with amp turned off where it would slow training down, and a line saying so.

    Without AVX-512 a CPU runs bfloat16 through slow reference kernels: one
    training step took 10.6x float32's on an AVX2-only EPYC (benchmarks/amp_step_bench.py).
    """
    if config.amp and device.type == "cpu" and not cpu_bfloat16_is_fast():
        log("amp: this CPU has no fast bfloat16 (that needs AVX-512, or BF16 on Arm); training in float32")
        return dataclasses.replace(config, amp=False)
    return config


def train_one_epoch(model, loader, optimizer, scheduler, criterion, config: TrainConfig, epoch: int, device,
                    scaler: torch.amp.GradScaler | None = None, show_progress: bool = True, ema=None,
                    budget: TimeBudget | None = None,
                    memory_format: torch.memory_format = torch.channels_last) -> dict:
    """One pass over ``loader``, or its first steps until the time ``budget`` is spent; ``criterion`` is
    :func:`loss_function`'s (built once per run); ``memory_format`` is the model's (training_memory_format)."""
    budget = budget or TimeBudget(0)
    model.train()
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    # CUDA autocasts to float16 (with the scaler); CPU to bfloat16, the type its matmul kernels speed up.
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    meta = loader.dataset.meta           # the input's size and normalisation
    sums: dict[str, float] = {}
    started = time.perf_counter()
    stream = None if show_progress else io.StringIO()
    steps = 0
    label = f"epoch {epoch + 1}/{config.epochs}"
    if budget:
        label += f" ({max(budget.seconds - budget.elapsed, 0) / 60:.1f} of {budget.seconds / 60:g} min left)"
    with Progress(len(loader), label, unit="batch", stream=stream) as bar:
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            images = network_batch(batch["image"], meta).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=config.amp):
                outputs = model(images)
            # The losses in float32: small focal terms vanish in half precision.
            losses = criterion(as_outputs(outputs), batch, config)
            loss = losses["loss"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)           # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model.module if isinstance(model, DistributedDataParallel) else model)
            budget.tick()
            scheduler.step()
            steps += 1
            values = {name: value.item() for name, value in losses.items()}
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            parts = " ".join(f"{name.removesuffix('_loss')} {v:.3f}" for name, v in values.items() if name != "loss")
            bar.update(1, f"loss {values['loss']:.3f}" + (f" ({parts})" if parts else ""))
            if budget.spent:
                break
    n = max(steps, 1)
    if dist.is_initialized():
        # Losses averaged over all processes, so metrics.jsonl reads the same for any world size.
        totals = torch.tensor(list(sums.values()), dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        sums = dict(zip(sums, (totals / dist.get_world_size()).tolist()))
    seconds = time.perf_counter() - started
    world = dist.get_world_size() if dist.is_initialized() else 1
    images = len(loader.dataset) if steps == len(loader) else steps * config.batch_size * world
    return {**{k: v / n for k, v in sums.items()}, "lr": scheduler.get_last_lr()[0], "steps": steps,
            "seconds": round(seconds, 1), "images_per_second": round(images / seconds, 1)}


def loss_function(config: TrainConfig, log=print):
    """The losses of the config's approach; with ``compile_loss``, compiled by torch.compile.

    The losses are a dozen elementwise passes over every output map: unfused
    they took about a third of a CPU training step, fused 1.5x faster steps
    (benchmarks/README.md). Compiling needs a C++ compiler; where it fails, the
    first call says so in one line and training goes on with the plain function.
    """
    plain = topdown_losses if config.top_down else bottomup_losses
    if not config.compile_loss:
        return plain
    compiled, state = torch.compile(plain), {"fallback": False}

    def losses(outputs, batch: dict, config: TrainConfig) -> dict[str, torch.Tensor]:
        if not state["fallback"]:
            try:
                return compiled(outputs, batch, config)
            except Exception as exc:   # torch wraps a missing or broken compiler in several types
                state["fallback"] = True
                log(f"compile_loss: torch.compile failed ({type(exc).__name__}); using the plain losses")
        return plain(outputs, batch, config)

    return losses


def bottomup_losses(outputs, batch: dict, config: TrainConfig) -> dict[str, torch.Tensor]:
    """SimplePose: focal L2 on heatmaps, L1 on guiding offsets and refinements, weighted into ``loss``."""
    heatmaps, offsets, refinements = (o.float() for o in outputs)
    heatmap_loss = focal_l2_loss(heatmaps, batch["heatmaps"], batch["heatmap_mask"])
    offset_loss = offset_l1_loss(offsets, batch["offsets"], batch["offset_mask"])
    refinement_loss = offset_l1_loss(refinements, batch["refinements"], batch["refinement_mask"])
    loss = heatmap_loss + config.offset_loss_weight * offset_loss + config.refinement_loss_weight * refinement_loss
    return {"loss": loss, "heatmap_loss": heatmap_loss, "offset_loss": offset_loss,
            "refinement_loss": refinement_loss}


def topdown_losses(outputs, batch: dict, config: TrainConfig) -> dict[str, torch.Tensor]:
    """Simple Baselines: MSE on heatmaps, unlabelled keypoints weighted 0."""
    return {"loss": joints_mse_loss(outputs[0].float(), batch["heatmaps"], batch["weights"])}


def _resume(path, config: TrainConfig, meta: ModelMeta, model, optimizer, scheduler, scaler=None,
            ema=None) -> tuple[int, float, float]:
    """Load a checkpoint into the run; (epochs done, best validation figure, seconds the run had spent)."""
    ckpt = read_checkpoint(path)
    saved = ModelMeta.from_json(ckpt["meta"]).skeleton
    if (saved.keypoints, saved.limbs) != (meta.skeleton.keypoints, meta.skeleton.limbs):
        raise CheckpointError(f"{path} groups {len(saved.keypoints)} {saved.name} keypoints by {len(saved.limbs)} "
                              f"limbs, this run's {meta.skeleton.name} skeleton has {len(meta.skeleton.keypoints)} "
                              f"keypoints and {len(meta.skeleton.limbs)} limbs: a run resumes only on its own "
                              f"skeleton (rtpose's may have changed since; start a new run)")
    # Keys missing from an older checkpoint's config had their defaults then.
    old, new = {**TrainConfig(train_annotations="").to_dict(), **ckpt["config"]}, config.to_dict()
    shape = ("architecture", "widths", "blocks", "neck_width", "head_width", "resnet_depth", "deconv_filters")
    if any(old[key] != new[key] for key in shape):
        raise CheckpointError(f"{path} was trained with another architecture than this config describes")
    # With EMA, "model" holds the averaged weights and "training_model" the raw ones training goes on from.
    model.load_state_dict(ckpt.get("training_model", ckpt["model"]))
    if ema is not None:
        ema.module.load_state_dict(ckpt["model"])
        # The decay ramp goes on where it was, rather than starting over from a copy.
        ema.n_averaged.fill_(int(ckpt.get("ema_updates", 1)))
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and scaler.is_enabled() and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    metrics = ckpt.get("metrics", {})
    return (int(ckpt["epoch"]), float(metrics.get("best_val", metrics.get("best_val_AP", -1.0))),  # older name
            float(metrics.get("elapsed_seconds", 0.0)))
