"""Top-down Simple Baselines: crops, targets and heatmap reading agree; train, export, eval and run a PoseResNet."""

import json
import types

import cv2
import numpy as np
import pytest

from rtpose.decoder import People
from rtpose.model_meta import ModelMeta
from rtpose.skeleton import COCO
from rtpose.topdown import (TopDown, apply_affine, boxes_from_people, heatmaps_to_keypoints, mirror_heatmaps,
                            oks_nms)
from tests.test_run_cli import assert_one_line_error, rtpose
from trainer.annotations import load_keypoint_set
from trainer.data import Augmentation
from trainer.evaluate import coco_keypoint_eval, load_coco_gt, people_to_coco
from trainer.topdown_data import TopDownDataset, encode_heatmaps

META = ModelMeta(input_width=192, input_height=256, architecture="pose-resnet-50", approach="top-down",
                 output_names=("heatmaps",))


def topdown_reader(meta: ModelMeta = META) -> TopDown:
    """A TopDown for its geometry only (crops and reading heatmaps): no engine is run."""
    return TopDown(types.SimpleNamespace(meta=meta))


@pytest.fixture(scope="module")
def coco_set(shared_data):
    return load_keypoint_set(shared_data / "coco" / "test_coco.json", shared_data / "coco")


def test_targets_read_back_through_the_runtime_give_ap_1_on_real_coco(coco_set):
    """Runtime crop -> trainer's heatmap targets -> runtime reading -> image: the annotations come back."""
    td, results, errors = topdown_reader(), [], []
    for record in coco_set.images:
        crops = td.crops(cv2.imread(str(record.path)), record.boxes)
        maps = []
        for matrix, kps in zip(crops.matrices, record.keypoints):
            in_crop = kps.copy()
            in_crop[:, :2] = apply_affine(matrix, kps[:, :2])
            maps.append(encode_heatmaps(in_crop, META)[0])
        people = td.read(np.asarray(maps), crops, np.ones(len(record.boxes)))
        assert len(people) == len(record.boxes)
        for truth in record.keypoints:        # people come back best first: match each to its nearest
            labelled = truth[:, 2] > 0
            distances = np.linalg.norm(people.keypoints[:, labelled, :2] - truth[labelled, :2], axis=-1)
            errors.extend(distances[distances.mean(axis=1).argmin()])
        results += people_to_coco(record.image_id, people)
    stats, _ = coco_keypoint_eval(load_coco_gt(coco_set), results, coco_set.skeleton)
    assert stats["AP"] > 0.99
    # A heatmap cell is 4 crop pixels; argmax plus the quarter step is within about a pixel of the crop.
    assert np.median(errors) < 2.0 and len(errors) > 100


def test_augmented_crops_and_targets_follow_the_annotations(coco_set):
    """Scaled, rotated, shifted and flipped crops: the targets decode to the annotations carried through the
    sample's transform, and a flipped sample is the unflipped one mirrored, with left and right swapped."""
    aug = dict(scale=(0.7, 1.3), rotation=40, translation=0.1)
    plain = TopDownDataset(coco_set, META, seed=3, augmentation=Augmentation(flip_prob=0.0, **aug))
    flipped = TopDownDataset(coco_set, META, seed=3, augmentation=Augmentation(flip_prob=1.0, **aug))
    assert len(plain) == sum(len(r.boxes) for r in coco_set.images) == 12
    perm = list(COCO.flip_permutation)
    rotated = 0
    for i, (image_index, person) in enumerate(plain.people):
        truth = coco_set.images[image_index].keypoints[person]
        sample = plain.sample(i)
        rotated += abs(np.degrees(np.arctan2(sample.matrix[1, 0], sample.matrix[0, 0]))) > 5
        heatmaps, weights = encode_heatmaps(sample.keypoints, META)
        read = heatmaps_to_keypoints(heatmaps[None], META.stride)[0]
        inside = weights > 0
        expected = apply_affine(sample.matrix, truth[:, :2])
        assert inside.sum() >= 0.5 * (truth[:, 2] > 0).sum()
        assert np.abs(read[inside, :2] - expected[inside]).max() <= 2.0
        mirror = flipped.sample(i)
        assert mirror.flipped and not sample.flipped
        np.testing.assert_array_equal(mirror.crop, sample.crop[:, ::-1])
        labelled = sample.keypoints[:, 2] > 0
        np.testing.assert_allclose(mirror.keypoints[perm][labelled, 0],
                                   META.input_width - 1 - sample.keypoints[labelled, 0], atol=1e-3)
        np.testing.assert_allclose(mirror.keypoints[perm][labelled, 1], sample.keypoints[labelled, 1], atol=1e-3)
    assert rotated >= 6                      # the augmentation did rotate most crops


def test_flip_test_maps_mirrored_heatmaps_back_to_the_same_keypoints():
    rng = np.random.default_rng(0)
    kps = np.concatenate([rng.uniform(20, 170, (17, 1)), rng.uniform(20, 230, (17, 1)), np.full((17, 1), 2.0)], 1)
    mirrored = kps[list(COCO.flip_permutation)].copy()
    mirrored[:, 0] = META.input_width - 1 - mirrored[:, 0]
    back = mirror_heatmaps(encode_heatmaps(mirrored, META)[0][None], COCO.flip_permutation)
    read = heatmaps_to_keypoints(back, META.stride)[0]
    # Simple Baselines' one-cell shift leaves the mirror a quarter cell (1 pixel) off, plus reading's rounding.
    assert np.abs(read[:, 0] - kps[:, 0]).max() <= 3.0
    assert np.abs(read[:, 1] - kps[:, 1]).max() <= 2.0


def test_oks_nms_drops_duplicates_and_keeps_neighbours():
    base = np.concatenate([np.random.default_rng(1).uniform(100, 200, (17, 2)), np.ones((17, 1))], 1)
    near, other = base.copy(), base.copy()
    near[:, :2] += 0.5                       # the same person found twice
    other[:, 0] += 150                       # someone beside them
    people = People(np.stack([near, base, other]).astype(np.float32), np.array([0.8, 0.9, 0.7], np.float32))
    keep = oks_nms(people, np.full(3, 100.0 * 100.0), COCO.sigmas)
    assert keep.tolist() == [1, 2]


def test_a_frame_without_people_gives_no_people():
    td = topdown_reader()
    people = td.read(np.zeros((0, 17, 64, 48), np.float32), td.crops(np.zeros((240, 320, 3), np.uint8),
                                                                     np.zeros((0, 4))), np.zeros(0))
    assert len(people) == 0 and people.keypoints.shape == (0, 17, 3)


def test_boxes_from_people_cover_the_confident_keypoints():
    kps = np.zeros((2, 17, 3), np.float32)
    kps[0, :, :2] = np.stack([np.linspace(10, 50, 17), np.linspace(100, 300, 17)], 1)
    kps[0, :, 2] = 0.9
    kps[0, 0] = (500, 500, 0.05)             # below the score threshold: not part of the box
    kps[1, 0] = (5, 5, 0.9)                  # one keypoint: no box
    boxes, scores = boxes_from_people(People(kps, np.array([0.6, 0.5], np.float32)))
    assert boxes.shape == (1, 4) and scores.tolist() == [pytest.approx(0.6)]
    x, y, w, h = boxes[0]
    assert x < 10 + 40 / 17 and y < 100 + 200 / 17 and x + w > 50 and y + h > 300 and x + w < 60


TINY_CONFIG = """\
architecture: pose_resnet
resnet_depth: 18
deconv_filters: 32
input_width: 96
input_height: 128
train_annotations: {data}/coco/test_coco.json
train_images: {data}/coco
val_annotations: {data}/coco/test_coco.json
val_images: {data}/coco
output_dir: {out}
epochs: 1
batch_size: 4
workers: 0
flip_prob: 0.5
scale_range: [0.8, 1.2]
rotation_deg: 30
"""


@pytest.fixture(scope="module")
def tiny_topdown(shared_data, tmp_path_factory):
    """A small PoseResNet-18 trained one epoch by `rtpose train`, exported by `rtpose export`."""
    tmp = tmp_path_factory.mktemp("topdown")
    config = tmp / "topdown.yaml"
    config.write_text(TINY_CONFIG.format(data=shared_data, out=tmp / "run"))
    trained = rtpose("train", config)
    assert trained.returncode == 0, trained.stderr
    assert "training pose-resnet-18" in trained.stderr and "12 people in 4 images" in trained.stderr
    exported = rtpose("export", tmp / "run" / "last.pt", "--output", tmp / "topdown.onnx")
    assert exported.returncode == 0, exported.stderr
    diff = float(exported.stdout.split("heatmaps ")[1].split()[0])
    assert diff < 1e-4
    return tmp / "topdown.onnx"


def test_eval_takes_boxes_from_detections_the_ground_truth_or_a_person_model(shared_data, tiny_topdown, tmp_path):
    annotations = shared_data / "coco" / "test_coco.json"
    gt = json.loads(annotations.read_text())
    detections = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
                  for a in gt["annotations"] if a["num_keypoints"] > 0]
    (tmp_path / "dets.json").write_text(json.dumps(detections))
    results = {}
    for name, options in (("gt", ["--gt-boxes"]), ("dets", ["--detections", tmp_path / "dets.json"]),
                          ("person", [])):
        out = rtpose("eval", tiny_topdown, "--annotations", annotations, "--images", shared_data / "coco",
                     "--results", tmp_path / f"{name}.json", *options)
        assert out.returncode == 0, out.stderr
        assert "Average Precision" in out.stdout
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    # The detections are the ground truth's boxes: the same crops, the same poses.
    assert results["gt"] == results["dets"] and len(results["gt"]) > 0
    # The shipped bottom-up model's poses give boxes of their own.
    assert results["person"] != results["gt"]
    both = rtpose("eval", tiny_topdown, "--annotations", annotations, "--images", shared_data / "coco",
                  "--gt-boxes", "--detections", tmp_path / "dets.json")
    assert_one_line_error(both, "one source of person boxes")
    missing = rtpose("eval", tiny_topdown, "--annotations", annotations, "--images", shared_data / "coco",
                     "--detections", tmp_path / "nope.json")
    assert_one_line_error(missing, "detections file not found")
    knob = rtpose("eval", tiny_topdown, "--annotations", annotations, "--images", shared_data / "coco",
                  "--gt-boxes", "--max-offset-distance", "5")
    assert_one_line_error(knob, "--max-offset-distance is a decoder option for the person model; with --gt-boxes")


def test_decoder_options_act_on_the_person_model_in_eval_as_in_run(shared_data, tiny_topdown, tmp_path):
    # No person scores 1 (a mean of sigmoids): at that threshold the person model finds nobody,
    # so the top-down model gets no boxes, in eval as in run.
    annotations = shared_data / "coco" / "test_coco.json"
    for threshold, found in (("1.0", False), ("0.15", True)):
        out = rtpose("eval", tiny_topdown, "--annotations", annotations, "--images", shared_data / "coco",
                     "--results", tmp_path / "results.json", "--json", tmp_path / "figures.json",
                     "--person-threshold", threshold)
        assert out.returncode == 0, out.stderr
        assert bool(json.loads((tmp_path / "results.json").read_text())) == found
        assert json.loads((tmp_path / "figures.json").read_text())["decoder"]["person_threshold"] == float(threshold)
        run = rtpose("run", "--source", shared_data / "video" / "basketball_426x240.mp4", "--model", tiny_topdown,
                     "--max-frames", "6", "--json", tmp_path / "poses.jsonl", "--person-threshold", threshold)
        assert run.returncode == 0, run.stderr
        lines = [json.loads(line) for line in (tmp_path / "poses.jsonl").read_text().splitlines()]
        assert any(line["persons"] for line in lines) == found


def test_run_takes_a_top_down_model_like_a_bottom_up_one(shared_data, tiny_topdown, tmp_path):
    out = rtpose("run", "--source", shared_data / "video" / "basketball_426x240.mp4", "--model", tiny_topdown,
                 "--max-frames", "6", "--json", tmp_path / "poses.jsonl", "--output", tmp_path / "poses.mp4")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in (tmp_path / "poses.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    people = [p for line in lines for p in line["persons"]]
    assert people and all(len(p["keypoints"]) == 17 for p in people)
    capture = cv2.VideoCapture(str(tmp_path / "poses.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6


def test_person_model_must_be_bottom_up_and_only_for_top_down_models(shared_data, tiny_topdown, tmp_path):
    video = shared_data / "video" / "basketball_426x240.mp4"
    twice = rtpose("run", "--source", video, "--model", tiny_topdown, "--person-model", tiny_topdown,
                   "--max-frames", "2")
    assert_one_line_error(twice, "must be bottom-up")
    bottom_up = rtpose("run", "--source", video, "--person-model", tiny_topdown, "--max-frames", "2")
    assert_one_line_error(bottom_up, "--person-model is for top-down models")


def test_config_names_an_unknown_architecture(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("architecture: hrnet\ntrain_annotations: x.json\n")
    assert_one_line_error(rtpose("train", config), "'architecture' must be one of simplepose, pose_resnet")


def test_top_down_trains_on_mpii_and_reports_pckh_on_its_boxes(shared_data, tmp_path):
    """MPII's center/scale give the crops: a PoseResNet trained one epoch, then PCKh as Simple Baselines has it."""
    config = tmp_path / "mpii.yaml"
    config.write_text(TINY_CONFIG.format(data=shared_data, out=tmp_path / "run")
                      .replace("coco/test_coco.json", "mpii/test_mpii.json").replace("/coco\n", "/mpii\n"))
    trained = rtpose("train", config)
    assert trained.returncode == 0, trained.stderr
    assert "5 people in 5 images" in trained.stderr
    evaluated = rtpose("eval", tmp_path / "run" / "last.pt", "--annotations", shared_data / "mpii/test_mpii.json",
                       "--images", shared_data / "mpii")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "PCKh@0.5" in evaluated.stdout and "Mean" in evaluated.stdout
