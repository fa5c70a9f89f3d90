"""Augmentation on the real COCO, CrowdPose and MPII samples.

The augmented targets are decoded with the runtime decoder and compared with
the annotations transformed here, independently of trainer/data.py: the
test applies the sample's affine matrix itself, mirrors by keypoint names and
drops what falls outside the input.
"""

import json

import cv2
import numpy as np
import pytest
import torch

from rtpose.decoder import decode
from rtpose.model_meta import DecoderConfig, ModelMeta
from rtpose.preprocess import preprocess
from tests.conftest import TINY_MODEL
from trainer.annotations import load_keypoint_set
from trainer.config import ConfigError, load_config
from trainer.data import Augmentation, PoseDataset, network_batch
from trainer.train import train

STRONG = Augmentation(flip_prob=0.5, scale=(0.6, 1.5), rotation=30, translation=0.15, colour=0.3)
# Keep every decoded keypoint: the default person threshold (mean score over
# all K keypoints) drops people pushed almost out of the input, which is the
# decoder's policy, not the augmentation's doing.
KEEP_ALL = DecoderConfig(person_threshold=0.0, min_keypoints=1)
SETS = {"coco": "coco/test_coco.json", "crowdpose": "crowdpose/test_crowdpose.json", "mpii": "mpii/test_mpii.json"}


def mirror_index(names):
    def other(n):
        for a, b in (("left_", "right_"), ("right_", "left_"), ("l_", "r_"), ("r_", "l_")):
            if n.startswith(a):
                return b + n[len(a):]
        return n
    return [names.index(other(n)) for n in names]


def connected(visible, limbs):
    """Whether the visible keypoints are joined by limbs of the skeleton (else no decoder can group them)."""
    group = {k: k for k in np.flatnonzero(visible)}
    def root(k):
        while group[k] != k:
            k = group[k]
        return k
    for a, b in limbs:
        if visible[a] and visible[b]:
            group[root(a)] = root(b)
    return len({root(k) for k in group}) <= 1


def expected_keypoints(record, sample, names, width, height):
    """The record's annotations carried by the sample's matrix and flip, computed here."""
    kps = record.keypoints.astype(np.float64).copy()
    m = sample.matrix
    xy = kps[..., :2] @ m[:, :2].T + m[:, 2]
    inside = (xy[..., 0] >= 0) & (xy[..., 1] >= 0) & (xy[..., 0] <= width - 1) & (xy[..., 1] <= height - 1)
    visible = (kps[..., 2] > 0) & inside
    if sample.flipped:
        xy[..., 0] = width - 1 - xy[..., 0]
        order = mirror_index(list(names))
        xy, visible = xy[:, order], visible[:, order]
    return xy, visible


def test_training_input_is_the_runtimes(shared_data):
    """Samples travel as uint8 and are normalised per batch in training: the numbers the runtime feeds the model."""
    kset = load_keypoint_set(shared_data / SETS["coco"], shared_data / "coco")
    meta = ModelMeta(input_width=320, input_height=256, skeleton=kset.skeleton)
    dataset = PoseDataset(kset, meta)
    trained_on = network_batch(torch.stack([dataset[i]["image"] for i in range(len(kset.images))]), meta)
    runtime = np.concatenate([preprocess(cv2.imread(str(r.path)), meta)[0] for r in kset.images])
    assert trained_on.shape == runtime.shape and trained_on.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(trained_on.numpy(), runtime, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", SETS)
def test_decoded_augmented_targets_give_the_transformed_annotations(shared_data, name):
    kset = load_keypoint_set(shared_data / SETS[name], shared_data / name)
    meta = ModelMeta(input_width=320, input_height=256, skeleton=kset.skeleton)
    dataset = PoseDataset(kset, meta, seed=1, augmentation=STRONG)
    people = whole = flips = pushed_out = 0
    for epoch in range(3):
        dataset.epoch = epoch
        for index, record in enumerate(kset.images):
            sample, item = dataset.sample(index), dataset[index]
            assert item["image"].shape == (256, 320, 3) and item["image"].dtype == torch.uint8
            flips += sample.flipped
            xy, visible = expected_keypoints(record, sample, kset.skeleton.keypoints, 320, 256)
            pushed_out += int((record.keypoints[..., 2] > 0).sum() - visible.sum())
            found = decode(item["heatmaps"].numpy(), item["offsets"].numpy(), item["refinements"].numpy(), meta,
                           KEEP_ALL)
            # Every keypoint type: the decoded positions are the expected ones,
            # no more and no fewer (a keypoint pushed out must not appear, a
            # left one must not come back as right).
            for k in range(kset.skeleton.num_keypoints):
                want = xy[visible[:, k], k]
                got = found.keypoints[found.keypoints[:, k, 2] > 0, k, :2]
                assert len(got) == len(want), (name, epoch, index, k)
                if len(want):
                    d = np.linalg.norm(want[:, None] - got[None], axis=2)
                    assert d.min(axis=1).max() < 0.5, (name, epoch, index, k)
            # And the decoder puts them together into the annotated people.
            for person_xy, person_visible in zip(xy, visible):
                if person_visible.sum() < 2 or not connected(person_visible, kset.skeleton.limbs):
                    continue
                people += 1
                whole += any(np.array_equal(p[:, 2] > 0, person_visible)
                             and np.abs(p[person_visible, :2] - person_xy[person_visible]).max() < 0.5
                             for p in found.keypoints)
            assert sample.areas == pytest.approx(record.areas * abs(np.linalg.det(sample.matrix[:, :2])), rel=1e-5)
    # A few small people half pushed out come apart into two decoded people;
    # every keypoint is still right (checked above).
    assert people > 0 and whole >= 0.85 * people
    assert 0 < flips < 3 * len(kset.images)
    if name == "coco":
        assert pushed_out > 0          # the strong scale and shift do push keypoints out


def test_image_moves_with_its_keypoints(tmp_path):
    """A bright square drawn at the nose is found at the transformed nose, flipped or not."""
    from rtpose.skeleton import COCO
    image = np.zeros((150, 200, 3), np.uint8)
    cv2.rectangle(image, (57, 37), (63, 43), (255, 255, 255), -1)     # centre (60, 40)
    cv2.imwrite(str(tmp_path / "a.jpg"), image)
    kps = [0.0] * 51
    kps[0:3] = [60, 40, 2]
    (tmp_path / "a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 150}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": kps, "num_keypoints": 1,
                         "area": 5000.0, "bbox": [20, 10, 80, 100], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO.keypoints)}]}))
    kset = load_keypoint_set(tmp_path / "a.json", tmp_path)
    meta = ModelMeta(input_width=128, input_height=96)
    dataset = PoseDataset(kset, meta, augmentation=Augmentation(flip_prob=0.5, scale=(0.8, 1.3), rotation=40,
                                                                translation=0.1, colour=0.2))
    flips = 0
    for epoch in range(8):
        dataset.epoch = epoch
        sample = dataset.sample(0)
        flips += sample.flipped
        grey = sample.image.astype(np.float32).mean(axis=2)
        ys, xs = np.nonzero(grey > 0.5 * grey.max())
        nose = sample.keypoints[0, 0]
        assert nose[2] > 0
        assert abs(xs.mean() - nose[0]) < 1.0 and abs(ys.mean() - nose[1]) < 1.0, epoch
    assert 0 < flips < 8


def test_augmentation_keys_in_the_config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train_annotations: a.json\n")
    assert load_config(path).augmentation() == Augmentation(flip_prob=0.5)       # today's behaviour
    path.write_text("train_annotations: a.json\nscale_range: [0.75, 1.25]\nrotation_deg: 30\n"
                    "translation: 0.1\ncolour_jitter: 0.2\n")
    assert load_config(path).augmentation() == Augmentation(0.5, (0.75, 1.25), 30, 0.1, 0.2)
    path.write_text("train_annotations: a.json\nscale_range: [1.25, 0.75]\n")
    with pytest.raises(ConfigError, match="scale_range"):
        load_config(path)
    path.write_text("train_annotations: a.json\nrotation: 30\n")
    with pytest.raises(ConfigError, match="unknown key 'rotation'"):
        load_config(path)


@pytest.mark.parametrize("name, workers", [("coco", 1), ("crowdpose", 0), ("mpii", 0)])
def test_one_epoch_with_augmentation_on_the_real_samples(shared_data, tmp_path, name, workers):
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"train_annotations: {shared_data / SETS[name]}\ntrain_images: {shared_data / name}\n"
        f"output_dir: {tmp_path / 'run'}\n" + TINY_MODEL + "epochs: 1\nbatch_size: 2\n"
        f"workers: {workers}\nflip_prob: 0.5\nscale_range: [0.7, 1.4]\nrotation_deg: 30\ntranslation: 0.1\n"
        "colour_jitter: 0.3\n")
    last = train(load_config(path), log=lambda *_: None)
    metrics = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[-1])
    assert last.is_file() and metrics["epoch"] == 1 and np.isfinite(metrics["loss"])


def test_colour_jitter_is_brightness_contrast_saturation(shared_data):
    from trainer.data import _colour_jitter
    image = cv2.imread(str(shared_data / "coco/000000000785.jpg"))
    brightness, contrast, saturation = np.random.default_rng(3).uniform(0.7, 1.3, size=3)
    out = image.astype(np.float64) * brightness
    out = (out - out.mean()) * contrast + out.mean()
    grey = out.mean(axis=2, keepdims=True)
    expected = np.clip((out - grey) * saturation + grey, 0, 255)
    got = _colour_jitter(image, np.random.default_rng(3), 0.3)
    assert np.abs(got - expected).max() <= 1.0


def test_crowd_boxes_move_with_the_image(shared_data):
    """The heatmap loss stays masked at the centre of each ignored person, wherever the transform puts it."""
    kset = load_keypoint_set(shared_data / SETS["coco"], shared_data / "coco")
    meta = ModelMeta(input_width=320, input_height=256)
    dataset = PoseDataset(kset, meta, seed=2, augmentation=STRONG)
    checked = 0
    for epoch in range(4):
        dataset.epoch = epoch
        for index, record in enumerate(kset.images):
            sample, item = dataset.sample(index), dataset[index]
            mask = item["heatmap_mask"].numpy()
            if len(record.ignore_boxes) == 0:
                assert (mask == 1).all()
                continue
            for x, y, w, h in record.ignore_boxes:
                cx, cy = sample.matrix @ np.array([x + w / 2, y + h / 2, 1.0])
                if sample.flipped:
                    cx = 320 - 1 - cx
                u, v = round((cx + 0.5) / 4 - 0.5), round((cy + 0.5) / 4 - 0.5)
                if 0 <= u < mask.shape[1] and 0 <= v < mask.shape[0]:
                    assert mask[v, u] == 0, (epoch, index)
                    checked += 1
    assert checked >= 4
