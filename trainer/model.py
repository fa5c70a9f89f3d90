"""The bottom-up model, SimplePose V2 style: backbone + upsampling head at stride 4.

A small residual backbone written here (no downloaded weights) goes down to
stride 32; a top-down path with lateral connections brings it back to
stride 4, where one head gives keypoint heatmaps (through a sigmoid) with
their sub-cell refinements and another the guiding offsets. ``forward``
returns the three tensors and nothing else: losses live in
:mod:`trainer.losses`, decoding in :mod:`rtpose.decoder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from rtpose.skeleton import Skeleton


@dataclass(frozen=True)
class ModelConfig:
    widths: tuple[int, ...] = (16, 24, 48, 96, 160)   # stem, then strides 4, 8, 16, 32
    blocks: tuple[int, ...] = (1, 2, 2, 2)            # residual blocks per stage (strides 4..32)
    neck_width: int = 48                               # channels of the upsampling path
    head_width: int = 48


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride)
        self.conv2 = conv_bn(cout, cout, relu=False)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else conv_bn(cin, cout, stride, kernel=1, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class Backbone(nn.Module):
    """Returns feature maps at strides 4, 8, 16 and 32."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        w = config.widths
        self.stem = conv_bn(3, w[0], stride=2)
        self.stages = nn.ModuleList()
        for i, n in enumerate(config.blocks):
            blocks = [BasicBlock(w[i], w[i + 1], stride=2)]
            blocks += [BasicBlock(w[i + 1], w[i + 1]) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class UpsamplingNeck(nn.Module):
    """Top-down path: each coarser map is upsampled and added to the finer one."""

    def __init__(self, in_widths: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn(c, width, kernel=1, relu=False) for c in in_widths)
        self.smooth = nn.ModuleList(conv_bn(width, width) for _ in in_widths[:-1])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            x = F.interpolate(x, size=features[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[i](F.relu(x + self.lateral[i](features[i])))
        return x


class SimplePoseNet(nn.Module):
    def __init__(self, skeleton: Skeleton, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.skeleton, self.config = skeleton, config
        self.backbone = Backbone(config)
        self.neck = UpsamplingNeck(config.widths[1:], config.neck_width)
        k = skeleton.num_keypoints
        self.keypoint_head = self._head(config, 3 * k)       # heatmaps, then (dx, dy) refinements
        self.offset_head = self._head(config, skeleton.num_offset_channels)
        # Start heatmaps near 0 (sigmoid(-4) = 0.018): most of every map is background.
        nn.init.constant_(self.keypoint_head[-1].bias[:k], -4.0)

    @staticmethod
    def _head(config: ModelConfig, outputs: int) -> nn.Sequential:
        return nn.Sequential(conv_bn(config.neck_width, config.head_width),
                             nn.Conv2d(config.head_width, outputs, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.neck(self.backbone(image))
        keypoints = self.keypoint_head(x)
        k = self.skeleton.num_keypoints
        return torch.sigmoid(keypoints[:, :k]), self.offset_head(x), keypoints[:, k:]


def read_state_dict(path: str | Path, wrapper_keys: tuple[str, ...] = ("model", "state_dict")) -> dict:
    """A state dict from a weights file: the file's own, or the one it holds under a wrapper key."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"weights file not found: {path}") from None
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise ValueError(f"{path} is not a torch weights file ({type(exc).__name__})") from None
    for key in wrapper_keys:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    return state


def mismatches(own: dict, state: dict) -> str:
    """What keeps ``state`` from loading into a model whose state dict is ``own``, in one line ('' if nothing)."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                   for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    return "; ".join(f"{label} {len(keys)}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                     for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                     if keys)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a user's weights file (a state dict, or a checkpoint holding one under ``model``).

    Names and shapes must match exactly; the error lists what does not.
    """
    state = read_state_dict(path, ("model",))
    problems = mismatches(model.state_dict(), state)
    if problems:
        raise ValueError(f"{path} does not fit this model: {problems}")
    model.load_state_dict(state)
