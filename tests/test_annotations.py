"""The dataset code on the real COCO, CrowdPose and MPII samples, and on broken files."""

import json

import numpy as np
import pytest

from rtpose.skeleton import COCO, CROWDPOSE, MPII
from trainer.annotations import DatasetError, load_keypoint_set
from trainer.config import ConfigError, load_config


def test_coco_sample_loads_with_people_without_keypoints_as_ignore_regions(shared_data):
    kset = load_keypoint_set(shared_data / "coco/test_coco.json", shared_data / "coco")
    assert kset.skeleton is COCO and len(kset) == 4
    assert sum(len(r.keypoints) for r in kset.images) == 12          # 14 people, 2 with no keypoints
    assert sum(len(r.ignore_boxes) for r in kset.images) == 2
    first = kset.images[0]
    assert first.keypoints.shape == (1, 17, 3) and first.keypoints[0, 0].tolist() == [367, 81, 2]


def test_crowdpose_sample_loads_with_its_14_keypoints(shared_data):
    kset = load_keypoint_set(shared_data / "crowdpose/test_crowdpose.json", shared_data / "crowdpose")
    assert kset.skeleton is CROWDPOSE
    assert sum(len(r.keypoints) for r in kset.images) == 4            # 5 people, one with no keypoints
    assert all(r.keypoints.shape[1:] == (14, 3) for r in kset.images)


def test_mpii_list_format_loads_with_its_16_joints(shared_data):
    kset = load_keypoint_set(shared_data / "mpii/test_mpii.json", shared_data / "mpii")
    raw = json.loads((shared_data / "mpii/test_mpii.json").read_text())
    assert kset.skeleton is MPII and len(kset) == 5 and not kset.is_coco_format
    record = next(r for r in kset.images if r.path.name == raw[0]["image"])
    # MPII numbers pixels from 1 (Matlab); rtpose from 0.
    assert record.keypoints[0, :, :2] == pytest.approx(np.asarray(raw[0]["joints"]) - 1)
    assert (record.keypoints[0, :, 2] == 2).all()


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found"):
        load_keypoint_set(tmp_path / "none.json")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"images": []}', "no 'annotations' list"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}', "no category with keypoints"),
    ('{"images": [{"file_name": "a.jpg"}], "annotations": [], "categories": '
     '[{"id": 1, "keypoints": ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", '
     '"right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", '
     '"left_knee", "right_knee", "left_ankle", "right_ankle"]}]}', "malformed COCO entry"),
    ('[{"image": "a.jpg"}]', "malformed MPII entry"),
])
def test_malformed_annotation_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_keypoint_set(path)


def test_images_missing_on_disk_are_reported_with_a_count(shared_data, tmp_path):
    with pytest.raises(DatasetError, match=r"4 of 4 images .* missing"):
        load_keypoint_set(shared_data / "coco/test_coco.json", tmp_path)


def test_config_with_an_unknown_key_is_refused(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train_annotations: a.json\nepochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        load_config(path)
    path.write_text("train_annotations: a.json\nepochs: 3\n")
    assert load_config(path, epochs=5).epochs == 5
    path.write_text("train_annotations: a.json\ninput_width: 100\n")
    with pytest.raises(ConfigError, match="multiples of 32"):
        load_config(path)


def test_several_training_sets_are_used_together(shared_data):
    from trainer.annotations import load_keypoint_sets
    coco = shared_data / "coco/test_coco.json"
    both = load_keypoint_sets([coco, coco], [shared_data / "coco", shared_data / "coco"])
    assert len(both) == 8
    with pytest.raises(DatasetError, match="crowdpose keypoints"):
        load_keypoint_sets([coco, shared_data / "crowdpose/test_crowdpose.json"],
                           [shared_data / "coco", shared_data / "crowdpose"])
