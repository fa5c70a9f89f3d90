import json

import numpy as np
import pytest
from pycocotools.cocoeval import Params

from rtpose.model_meta import ModelMeta
from rtpose.skeleton import COCO, CROWDPOSE, SKELETONS, Skeleton, skeleton_for_keypoints


@pytest.mark.parametrize("skeleton", SKELETONS.values(), ids=SKELETONS.keys())
def test_limbs_connect_every_keypoint(skeleton):
    # Grouping follows limbs: a keypoint on no limb could never join a person.
    reached = {0}
    for _ in range(skeleton.num_keypoints):
        for a, b in skeleton.limbs:
            if a in reached or b in reached:
                reached |= {a, b}
    assert reached == set(range(skeleton.num_keypoints))


@pytest.mark.parametrize("skeleton", SKELETONS.values(), ids=SKELETONS.keys())
def test_flip_swaps_left_and_right_names(skeleton):
    perm = skeleton.flip_permutation
    assert [perm[p] for p in perm] == list(range(skeleton.num_keypoints))
    mirror = {"left_": "right_", "right_": "left_", "l_": "r_", "r_": "l_"}
    for i, j in enumerate(perm):
        name = skeleton.keypoints[i]
        prefix = next((p for p in mirror if name.startswith(p)), "")
        expected = mirror[prefix] + name[len(prefix):] if prefix else name
        assert skeleton.keypoints[j] == expected


def test_coco_sigmas_are_pycocotools_sigmas():
    assert np.allclose(COCO.sigmas, Params(iouType="keypoints").kpt_oks_sigmas)


def test_directed_limbs_pair_up_both_directions():
    assert COCO.directed_limbs[0] == COCO.limbs[0]
    assert COCO.directed_limbs[1] == COCO.limbs[0][::-1]
    assert COCO.num_offset_channels == 4 * len(COCO.limbs)


def test_lookup_by_names_and_metadata_round_trip():
    assert skeleton_for_keypoints(list(CROWDPOSE.keypoints)) is CROWDPOSE
    with pytest.raises(ValueError, match="no known skeleton"):
        skeleton_for_keypoints(["a", "b"])
    meta = ModelMeta(skeleton=CROWDPOSE, input_width=256, input_height=192)
    assert ModelMeta.from_json(meta.to_json()) == meta


def test_bad_skeleton_is_refused():
    with pytest.raises(ValueError):
        Skeleton("x", ("a", "b"), (), (0.1,), ((0, 1),))
    with pytest.raises(ValueError):
        Skeleton("x", ("a", "b"), (), (0.1, 0.1), ((0, 2),))


def test_coco_bones_are_the_coco_files_skeleton(shared_data):
    # What is drawn is COCO's own skeleton (1-based pairs in the category), not the grouping links.
    category = json.loads((shared_data / "coco/test_coco.json").read_text())["categories"][0]
    assert {frozenset((a - 1, b - 1)) for a, b in category["skeleton"]} == {frozenset(p) for p in COCO.bones}
    assert len(COCO.limbs) > len(COCO.bones)


def test_a_model_file_from_before_bones_draws_its_layouts_bones():
    old = COCO.to_dict()
    del old["bones"]
    assert Skeleton.from_dict(old).bones == COCO.bones
    assert Skeleton.from_dict({**old, "name": "mine"}).bones == COCO.limbs   # an unknown layout draws every limb
