"""decode(encode(annotations)) gives the annotations back: COCO AP >= 0.95 through pycocotools.

This pins the target encoder and the runtime decoder to each other, on real
COCO annotations and on synthetic crowds of 20+ overlapping people.
"""

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


def test_synthetic_crowds_survive_encode_decode(tmp_path):
    config = SceneConfig(width=512, height=512, min_people=20, max_people=30)
    kset = load_keypoint_set(write_dataset(tmp_path, 6, seed=3, config=config))
    assert min(len(r.keypoints) for r in kset.images) >= 20
    meta = ModelMeta(input_width=512, input_height=512, decoder=DecoderConfig(max_persons=60))
    # Measured 0.935 (seed 3; 0.953, 0.912, 0.930 for seeds 4-6). Most of the
    # loss is people cut by the image border, whose parts no keypoint in the
    # image joins; the rest is overlap: people standing right behind others
    # in the same pose have hidden (v=1) keypoints within one stride-4 cell
    # of the front person's, the two peaks merge, and filling gives them the
    # shared peak, a pixel or two off. See README "Known limits".
    assert round_trip_ap(kset, meta, max_dets=60) >= 0.93
