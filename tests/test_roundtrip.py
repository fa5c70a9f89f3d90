"""decode(encode(annotations)) gives the annotations back: COCO AP >= 0.95 through pycocotools.

This pins the target encoder and the runtime decoder to each other, on real
COCO annotations and on synthetic crowds of 20+ overlapping people.
"""

import numpy as np
import pytest

from rtpose.decoder import decode
from rtpose.model_meta import DecoderConfig, ModelMeta
from rtpose.preprocess import letterbox_transform
from rtpose.synthetic.scene import SceneConfig, write_dataset
from trainer.annotations import load_keypoint_set
from trainer.evaluate import coco_keypoint_eval, load_coco_gt, people_to_coco
from trainer.targets import encode


def round_trip_ap(kset, meta, max_dets=20):
    results = []
    for record in kset.images:
        box = letterbox_transform(record.width, record.height, meta.input_width, meta.input_height)
        keypoints = record.keypoints.copy()
        keypoints[..., :2] = box.to_input(keypoints[..., :2])
        targets = encode(keypoints, record.areas * box.scale ** 2, meta)
        people = decode(targets.heatmaps, targets.offsets, targets.refinements, meta).map_xy(box.to_original)
        results += people_to_coco(record.image_id, people)
    stats, _ = coco_keypoint_eval(load_coco_gt(kset), results, kset.skeleton, max_dets)
    return stats["AP"]


@pytest.mark.parametrize("size", [(320, 256), (512, 512)])
def test_real_coco_annotations_survive_encode_decode(shared_data, size):
    kset = load_keypoint_set(shared_data / "coco/test_coco.json", shared_data / "coco")
    meta = ModelMeta(input_width=size[0], input_height=size[1])
    assert round_trip_ap(kset, meta) >= 0.95


@pytest.mark.parametrize("seed", [3, 5])
def test_synthetic_crowds_survive_encode_decode(tmp_path, seed):
    config = SceneConfig(width=512, height=512, min_people=20, max_people=30)
    kset = load_keypoint_set(write_dataset(tmp_path, 30, seed=seed, config=config))
    assert min(len(r.keypoints) for r in kset.images) >= 20
    meta = ModelMeta(input_width=512, input_height=512, decoder=DecoderConfig(max_persons=60))
    # Measured 0.968 (seed 3) and 0.958 (seed 5; seeds 4 and 11: 0.973, 0.959).
    # What is lost: people with one keypoint in the image (min_keypoints is
    # 2), people cut by the border into parts no limb joins (an elbow and an
    # ankle), and people right behind others in the same pose, whose hidden
    # keypoints fall within one stride-4 cell of the front person's, so the
    # two peaks merge. See README "Known limits".
    assert round_trip_ap(kset, meta, max_dets=60) >= 0.95


def test_a_person_seen_from_the_knees_down_stays_one_person():
    # Hips out of frame: the legs share no labelled keypoint, and only the
    # skeleton's cross links (knee to knee, ankle to ankle) join them.
    meta = ModelMeta(input_width=320, input_height=256)
    names = meta.skeleton.keypoints
    legs = {"left_knee": (150, 20), "right_knee": (175, 22), "left_ankle": (148, 90), "right_ankle": (178, 88)}
    keypoints = np.zeros((1, len(names), 3), np.float32)
    for name, xy in legs.items():
        keypoints[0, names.index(name)] = (*xy, 2)
    targets = encode(keypoints, np.array([40.0 * 90]), meta)
    people = decode(targets.heatmaps, targets.offsets, targets.refinements, meta)
    assert len(people) == 1
    found = people.keypoints[0, :, 2] > 0
    assert sorted(names[i] for i in np.flatnonzero(found)) == sorted(legs)
    assert np.abs(people.keypoints[0, found, :2] - keypoints[0, found, :2]).max() < 1.0
