import numpy as np

from rtpose.decoder import People
from rtpose.render import draw_people
from rtpose.skeleton import COCO


def test_a_person_is_drawn_by_bones_not_by_grouping_links():
    names = COCO.keypoints
    keypoints = np.zeros((1, len(names), 3), np.float32)
    for name, xy in {"left_knee": (30, 30), "right_knee": (70, 30), "left_ankle": (30, 80)}.items():
        keypoints[0, names.index(name)] = (*xy, 0.9)
    image = draw_people(np.zeros((100, 100, 3), np.uint8), People(keypoints, np.ones(1, np.float32)), COCO)
    assert image[55, 30].any()          # knee to ankle: a bone
    assert not image[30, 50].any()      # knee to knee: a link for grouping only
