"""One flat YAML file per training experiment, read into a frozen dataclass.

No inheritance between configs and no unknown keys: a typo is an error, not
a silently ignored setting.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import yaml

from rtpose.errors import first_line
from rtpose.model_meta import ModelMeta
from rtpose.skeleton import Skeleton
from rtpose.topdown import TOP_DOWN
from trainer.data import Augmentation
from trainer.model import ModelConfig, SimplePoseNet
from trainer.pose_resnet import RESNET_SPEC, PoseResNet
from trainer.targets import MAX_SIGMA, MIN_SIGMA

ARCHITECTURES = ("simplepose", "pose_resnet")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class TrainConfig:
    train_annotations: str | tuple[str, ...]  # one file or a list, used together
    train_images: str | tuple[str, ...] | None = None   # default: <annotation dir>/images for each
    val_annotations: str | None = None
    val_images: str | None = None
    output_dir: str = "runs/experiment"
    # model
    architecture: str = "simplepose"          # "simplepose" (bottom-up) or "pose_resnet" (top-down Simple Baselines)
    input_width: int = 320
    input_height: int = 256
    widths: tuple[int, ...] = ModelConfig.widths
    blocks: tuple[int, ...] = ModelConfig.blocks
    neck_width: int = ModelConfig.neck_width
    head_width: int = ModelConfig.head_width
    init_weights: str | None = None           # a state dict to start from
    resnet_depth: int = 50                    # pose_resnet: 18, 34, 50, 101 or 152
    deconv_filters: int = 256                 # pose_resnet: channels of the three deconvolutions
    backbone_weights: str | None = None       # pose_resnet: a torchvision-style ImageNet ResNet state dict
    # optimisation
    epochs: int = 10
    max_minutes: float = 0.0                  # wall-time budget, the schedule on its clock; 0 = epochs alone
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    offset_loss_weight: float = 5.0
    refinement_loss_weight: float = 2.0
    heatmap_min_sigma: float = MIN_SIGMA        # least Gaussian sigma of the heatmaps, map pixels (targets.py)
    flip_prob: float = 0.5
    amp: bool = False                         # mixed precision: float16 + loss scaling on CUDA, bfloat16 on CPU
    grad_clip: float = 0.0                    # max global gradient norm; 0 = no clipping
    ema_decay: float = 0.0                    # exponential moving average of the weights, e.g. 0.999; 0 = off
    compile_loss: bool = False                # torch.compile the losses (fused loops; needs a C++ compiler)
    # augmentation beyond flips; these defaults leave it off
    scale_range: tuple[float, float] = (1.0, 1.0)   # person size factor, log-uniform in [min, max]
    rotation_deg: float = 0.0                       # uniform in [-r, r] degrees
    translation: float = 0.0                        # shift, uniform in [-t, t] of the input size
    colour_jitter: float = 0.0                      # brightness/contrast/saturation in [1-c, 1+c]
    # machinery
    device: str = "auto"                      # auto (CUDA when present), cpu, cuda, cuda:1, ...
    workers: int = 1
    threads: int = 0                          # torch intra-op threads (per process); 0 = torch's default
    processes: int = 1                        # training processes on this machine (trainer/processes.py)
    seed: int = 0
    val_every: int = 1                        # epochs between validations
    max_train_images: int | None = None       # use only the first N training images

    @property
    def top_down(self) -> bool:
        return self.architecture == "pose_resnet"

    def build_model(self, skeleton: Skeleton) -> torch.nn.Module:
        if self.top_down:
            return PoseResNet(self.resnet_depth, skeleton.num_keypoints, self.deconv_filters)
        return SimplePoseNet(skeleton, self.model_config())

    def model_config(self) -> ModelConfig:
        return ModelConfig(widths=tuple(self.widths), blocks=tuple(self.blocks),
                           neck_width=self.neck_width, head_width=self.head_width)

    def augmentation(self) -> Augmentation:
        return Augmentation(flip_prob=self.flip_prob, scale=tuple(self.scale_range), rotation=self.rotation_deg,
                            translation=self.translation, colour=self.colour_jitter)

    def model_meta(self, skeleton: Skeleton) -> ModelMeta:
        if self.top_down:
            return ModelMeta(input_width=self.input_width, input_height=self.input_height, skeleton=skeleton,
                             architecture=f"pose-resnet-{self.resnet_depth}", approach=TOP_DOWN,
                             output_names=("heatmaps",))
        return ModelMeta(input_width=self.input_width, input_height=self.input_height, skeleton=skeleton)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


def config_from_dict(d: dict, source: str = "config") -> TrainConfig:
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}' (known keys: {', '.join(known)})")
    if "train_annotations" not in d:
        raise ConfigError(f"{source}: 'train_annotations' is required")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    try:
        config = TrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for f in fields(config):
        value = getattr(config, f.name)
        if f.type in ("int", "float") and not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{f.name}' must be a number, got {value!r}")
    if config.architecture not in ARCHITECTURES:
        raise ConfigError(f"{source}: 'architecture' must be one of {', '.join(ARCHITECTURES)}, "
                          f"got {config.architecture!r}")
    if config.top_down and config.resnet_depth not in RESNET_SPEC:
        raise ConfigError(f"{source}: 'resnet_depth' must be one of {', '.join(map(str, RESNET_SPEC))}, "
                          f"got {config.resnet_depth!r}")
    if config.backbone_weights and not config.top_down:
        raise ConfigError(f"{source}: 'backbone_weights' is for architecture pose_resnet (ImageNet ResNets); "
                          "use 'init_weights' for a whole simplepose state dict")
    for name in ("amp", "compile_loss"):
        if not isinstance(getattr(config, name), bool):
            raise ConfigError(f"{source}: '{name}' must be true or false, got {getattr(config, name)!r}")
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"{source}: 'ema_decay' must be in [0, 1) (0 = off), got {config.ema_decay!r}")
    if not isinstance(config.processes, int) or config.processes < 1:
        raise ConfigError(f"{source}: 'processes' must be a whole number >= 1, got {config.processes!r}")
    if config.max_minutes < 0:
        raise ConfigError(f"{source}: 'max_minutes' must be >= 0 (0 = no time budget), "
                          f"got {config.max_minutes!r}")
    if config.grad_clip < 0:
        raise ConfigError(f"{source}: 'grad_clip' must be >= 0 (0 = off), got {config.grad_clip!r}")
    if not 0 < config.heatmap_min_sigma <= MAX_SIGMA:
        raise ConfigError(f"{source}: 'heatmap_min_sigma' must be in (0, {MAX_SIGMA:g}] map pixels, "
                          f"got {config.heatmap_min_sigma!r}")
    if config.input_width % 32 or config.input_height % 32:
        raise ConfigError(f"{source}: input_width and input_height must be multiples of 32")
    scale = config.scale_range
    if (not isinstance(scale, tuple) or len(scale) != 2 or not all(isinstance(v, (int, float)) for v in scale)
            or not 0 < scale[0] <= scale[1]):
        raise ConfigError(f"{source}: 'scale_range' must be [min, max] with 0 < min <= max, got {scale!r}")
    if not (0 <= config.flip_prob <= 1 and 0 <= config.colour_jitter < 1 and config.rotation_deg >= 0
            and config.translation >= 0):
        raise ConfigError(f"{source}: need 0 <= flip_prob <= 1, 0 <= colour_jitter < 1, "
                          "rotation_deg >= 0 and translation >= 0")
    return config


def load_config(path: str | Path, **overrides) -> TrainConfig:
    """Read a YAML config; ``overrides`` that are not None replace its values."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {first_line(exc)}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: expected a mapping of keys to values")
    d.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(d, str(p))
