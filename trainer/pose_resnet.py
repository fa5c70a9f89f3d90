"""Top-down Simple Baselines PoseResNet: ResNet + three deconvolutions + a 1x1 conv to K heatmaps.

Xiao, Wu and Wei, "Simple Baselines for Human Pose Estimation and Tracking"
(ECCV 2018). Parameter names are exactly those of the published code,
microsoft/human-pose-estimation.pytorch, ``lib/models/pose_resnet.py``
(``conv1``, ``bn1``, ``layer1..4`` with ``downsample.0/.1``,
``deconv_layers.N``, ``final_layer``), so its released checkpoints load with
``strict=True``; the published configs use 256 filters, 4x4 kernels, no
deconvolution bias and a 1x1 final layer, the defaults here. The output is
at stride 4: 64x48 heatmaps for a 256x192 crop, 96x72 for 384x288.

Trained with ``architecture: pose_resnet`` in a config (crops and targets in
:mod:`trainer.topdown_data`), exported like the bottom-up model and run by
the runtime's :mod:`rtpose.topdown` on person boxes: a detector's results
file for evaluation, a bottom-up model's poses in ``rtpose run``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainer.model import mismatches, read_state_dict

BN_MOMENTUM = 0.1   # the published code's value; it matters to fine-tuning, not to loading


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        # Stride on the 3x3 conv, as the published (pytorch-style) Bottleneck has it.
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


# Depth -> (block, blocks per stage), the published resnet_spec.
RESNET_SPEC = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
               101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}
INPUT_SIZES = ((192, 256), (288, 384))   # (width, height) of the published crops


class PoseResNet(nn.Module):
    def __init__(self, depth: int = 50, num_keypoints: int = 17, deconv_filters: int = 256,
                 deconv_layers: int = 3) -> None:
        super().__init__()
        if depth not in RESNET_SPEC:
            raise ValueError(f"no ResNet-{depth}; choose one of {sorted(RESNET_SPEC)}")
        block, layers = RESNET_SPEC[depth]
        self.depth, self.num_keypoints = depth, num_keypoints
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        deconvs = []
        for _ in range(deconv_layers):
            # 4x4, stride 2, padding 1: exactly doubles the size (the published kernel-4 setting).
            deconvs += [nn.ConvTranspose2d(self.inplanes, deconv_filters, 4, 2, 1, 0, bias=False),
                        nn.BatchNorm2d(deconv_filters, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)]
            self.inplanes = deconv_filters
        self.deconv_layers = nn.Sequential(*deconvs)
        self.final_layer = nn.Conv2d(deconv_filters, num_keypoints, 1)
        self._init_head()

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion, momentum=BN_MOMENTUM))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_head(self) -> None:
        # The published initialisation of the new layers: N(0, 0.001) weights, zero biases.
        for m in [*self.deconv_layers.modules(), self.final_layer]:
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` crops -> ``[N, K, H/4, W/4]`` heatmaps."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


def load_backbone_weights(model: PoseResNet, path: str | Path) -> None:
    """Start the backbone from a torchvision-style ImageNet ResNet state dict file.

    Its ``fc.*`` (the classifier) is ignored; the deconvolution and final
    layers keep their initialisation. Every backbone name and shape must
    match, else one line names what does not.
    """
    state = read_state_dict(path, ("state_dict",))
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = {k: v for k, v in model.state_dict().items()
           if not k.startswith(("deconv_layers.", "final_layer."))}
    problems = mismatches(own, state)
    if problems:
        raise ValueError(f"{path} is not a ResNet-{model.depth} backbone: {problems}")
    model.load_state_dict(state, strict=False)
