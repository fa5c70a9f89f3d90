"""PoseResNet takes the published Simple Baselines checkpoints' names and shapes, and ImageNet backbones.

The expected state dict is written out here from the published structure
(microsoft/human-pose-estimation.pytorch, lib/models/pose_resnet.py and
experiments/coco/resnet50/256x192_d256x3_adam_lr1e-3.yaml: resnet_spec,
64-128-256-512 planes, Bottleneck expansion 4, downsample on each stage's
first block when the stride or width changes, deconv_layers as
ConvTranspose2d/BatchNorm2d/ReLU triples without bias, a 1x1 final_layer
with bias), not from trainer/pose_resnet.py.
"""

import pytest
import torch

from trainer.pose_resnet import PoseResNet, load_backbone_weights

PUBLISHED_LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def batch_norm(prefix, channels):
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def published_shapes(depth, joints=17, with_head=True):
    bottleneck = depth >= 50
    expansion = 4 if bottleneck else 1
    shapes = {"conv1.weight": (64, 3, 7, 7), **batch_norm("bn1", 64)}
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip([64, 128, 256, 512], PUBLISHED_LAYERS[depth]), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            cin = inplanes if b == 0 else planes * expansion
            if bottleneck:
                convs = [(planes, cin, 1, 1), (planes, planes, 3, 3), (planes * 4, planes, 1, 1)]
            else:
                convs = [(planes, cin, 3, 3), (planes, planes, 3, 3)]
            for c, shape in enumerate(convs, start=1):
                shapes[f"{p}.conv{c}.weight"] = shape
                shapes.update(batch_norm(f"{p}.bn{c}", shape[0]))
            if b == 0 and (stage > 1 or inplanes != planes * expansion):
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                shapes.update(batch_norm(f"{p}.downsample.1", planes * expansion))
        inplanes = planes * expansion
    if with_head:
        for i in range(3):
            shapes[f"deconv_layers.{3 * i}.weight"] = (inplanes if i == 0 else 256, 256, 4, 4)
            shapes.update(batch_norm(f"deconv_layers.{3 * i + 1}", 256))
        shapes["final_layer.weight"] = (joints, 256, 1, 1)
        shapes["final_layer.bias"] = (joints,)
    return shapes


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.tensor(7) if s == () else torch.rand(s, generator=g)) for k, s in shapes.items()}


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_published_checkpoint_names_and_shapes_load_strictly(depth):
    model = PoseResNet(depth)
    state = random_state(published_shapes(depth))
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.state_dict()["final_layer.bias"], state["final_layer.bias"])


def test_all_published_depths_have_the_published_names():
    for depth in (34, 152):
        assert {k: tuple(v.shape) for k, v in PoseResNet(depth).state_dict().items()} == published_shapes(depth)


def test_forward_gives_stride_4_heatmaps():
    model = PoseResNet(50).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 256, 192)).shape == (2, 17, 64, 48)
        assert PoseResNet(18, num_keypoints=16).eval()(torch.zeros(1, 3, 384, 288)).shape == (1, 16, 96, 72)


def test_imagenet_backbone_loads_and_a_wrong_one_is_named(tmp_path):
    # A torchvision-style ImageNet ResNet-50: the backbone names plus the classifier fc.
    imagenet = random_state(published_shapes(50, with_head=False), seed=1)
    imagenet["fc.weight"], imagenet["fc.bias"] = torch.rand(1000, 2048), torch.rand(1000)
    torch.save(imagenet, tmp_path / "resnet50.pth")
    model = PoseResNet(50)
    head_before = model.final_layer.weight.clone()
    load_backbone_weights(model, tmp_path / "resnet50.pth")
    assert torch.equal(model.layer4[2].conv3.weight, imagenet["layer4.2.conv3.weight"])
    assert torch.equal(model.final_layer.weight, head_before)

    with pytest.raises(ValueError, match=r"not a ResNet-18 backbone: unexpected 198: layer1\.0\.bn3\.bias"
                                         r".*wrong shape .*layer1\.0\.conv1\.weight \(64, 64, 1, 1\) != "
                                         r"\(64, 64, 3, 3\)") as err:
        load_backbone_weights(PoseResNet(18), tmp_path / "resnet50.pth")
    assert "\n" not in str(err.value)
    del imagenet["layer3.5.bn2.running_var"]
    torch.save(imagenet, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing 1: layer3\.5\.bn2\.running_var$"):
        load_backbone_weights(model, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="weights file not found"):
        load_backbone_weights(model, tmp_path / "none.pth")
