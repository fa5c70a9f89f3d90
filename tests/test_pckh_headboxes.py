"""MPII PCKh with MPII's own head sizes (0.6 x the head box diagonal), from gt_valid.mat or a JSON list."""

import json
import sys

import numpy as np
import pytest

from tests.test_metrics import AnnotationEngine
from trainer.annotations import DatasetError, load_keypoint_set
from trainer.pckh import (
    evaluate_pckh, head_sizes_from_boxes, head_sizes_per_image, pckh_table, read_head_boxes,
)


@pytest.fixture(scope="module")
def mpii_list(shared_data):
    """The sample list file's joints [N, 16, 2], labels [N, 16] and made-up head boxes [N, 4], in list order."""
    entries = json.loads((shared_data / "mpii/test_mpii.json").read_text())
    joints = np.asarray([e["joints"] for e in entries], dtype=np.float64)
    visible = np.asarray([e["joints_vis"] for e in entries]) > 0
    # A square around the head segment (upper neck 8 to head top 9), of a different size for each person.
    centre = (joints[:, 8] + joints[:, 9]) / 2
    side = np.linalg.norm(joints[:, 9] - joints[:, 8], axis=1) * np.linspace(0.7, 1.3, len(entries))
    boxes = np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], axis=1)
    return joints, visible, boxes


def headboxes_src(boxes: np.ndarray) -> np.ndarray:
    """gt_valid.mat's layout: [corner, x/y, person]."""
    return np.stack([boxes[:, :2].T, boxes[:, 2:].T])


def simple_baselines_pckh(pred, gt, visible, headboxes, threshold=0.5):
    """Simple Baselines' ``MPIIDataset.evaluate`` on gt_valid.mat's [16, 2, N] arrays, written out."""
    pos_pred_src, pos_gt_src = np.transpose(pred, [1, 2, 0]), np.transpose(gt, [1, 2, 0])
    jnt_visible = np.transpose(visible, [1, 0]).astype(np.float64)          # 1 - jnt_missing
    uv_err = np.linalg.norm(pos_pred_src - pos_gt_src, axis=1)
    headsizes = np.linalg.norm(headboxes[1, :, :] - headboxes[0, :, :], axis=0) * 0.6
    scaled_uv_err = uv_err / (headsizes * np.ones((len(uv_err), 1))) * jnt_visible
    jnt_count = np.sum(jnt_visible, axis=1)
    pckh = 100.0 * np.sum((scaled_uv_err <= threshold) * jnt_visible, axis=1) / jnt_count
    pckh = np.ma.array(pckh, mask=False)
    pckh.mask[6:8] = True
    jnt_count = np.ma.array(jnt_count, mask=False)
    jnt_count.mask[6:8] = True
    jnt_ratio = jnt_count / np.sum(jnt_count).astype(np.float64)
    # rank 0, rkne 1, rhip 2, lhip 3, lkne 4, lank 5, head 9, rwri 10, relb 11, rsho 12, lsho 13, lelb 14, lwri 15
    return {"head": pckh[9], "shoulder": 0.5 * (pckh[13] + pckh[12]), "elbow": 0.5 * (pckh[14] + pckh[11]),
            "wrist": 0.5 * (pckh[15] + pckh[10]), "hip": 0.5 * (pckh[3] + pckh[2]),
            "knee": 0.5 * (pckh[4] + pckh[1]), "ankle": 0.5 * (pckh[5] + pckh[0]),
            "mean": float(np.sum(pckh * jnt_ratio))}


def test_perfect_predictions_score_100_with_head_boxes(mpii_list):
    joints, visible, boxes = mpii_list
    table = pckh_table(joints, joints, visible, head_sizes_from_boxes(boxes))
    assert all(v == pytest.approx(100.0) for v in table.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbed_predictions_score_the_mpii_formula(mpii_list, seed):
    joints, visible, boxes = mpii_list
    rng = np.random.default_rng(seed)
    head = head_sizes_from_boxes(boxes)
    assert head == pytest.approx(0.6 * np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    # Errors around the threshold (0.5 head), so some joints pass and some fail.
    pred = joints + rng.normal(0, 0.4, joints.shape) * head[:, None, None]
    visible = visible & (rng.random(visible.shape) > 0.15)
    got = pckh_table(pred, joints, visible, head)
    want = simple_baselines_pckh(pred, joints, visible, headboxes_src(boxes))
    assert got == pytest.approx(want)
    assert 0 < got["mean"] < 100


def test_pckh_through_the_runtime_with_head_boxes_is_100(shared_data, mpii_list, tmp_path):
    """An engine that outputs the encoded annotations, evaluated with head boxes from a file."""
    _, _, boxes = mpii_list
    kset = load_keypoint_set(shared_data / "mpii/test_mpii.json", shared_data / "mpii")
    path = tmp_path / "head_boxes.json"
    path.write_text(json.dumps(boxes.tolist()))
    head_boxes = read_head_boxes(path, sum(len(r.keypoints) for r in kset.images))
    table = evaluate_pckh(AnnotationEngine(kset), kset, head_boxes=head_boxes)
    assert table["mean"] == pytest.approx(100.0)
    with pytest.raises(DatasetError, match="4 head boxes, 5 people"):
        evaluate_pckh(AnnotationEngine(kset), kset, head_boxes=head_boxes[:4])


def test_head_boxes_follow_the_list_file_order(shared_data, tmp_path):
    """People of one image that are not consecutive in the list still get their own boxes."""
    entries = json.loads((shared_data / "mpii/test_mpii.json").read_text())
    second = {**entries[0], "joints": (np.asarray(entries[0]["joints"]) + 5).tolist()}
    path = tmp_path / "list.json"
    path.write_text(json.dumps([entries[0], entries[1], second]))
    kset = load_keypoint_set(path, check_images=False)
    boxes = np.array([[0, 0, 3, 4], [0, 0, 6, 8], [0, 0, 9, 12]], dtype=np.float64)    # diagonals 5, 10, 15
    sizes = head_sizes_per_image(kset, boxes)
    assert [r.path.name for r in kset.images] == [entries[0]["image"], entries[1]["image"]]
    assert [s.tolist() for s in sizes] == [pytest.approx([3.0, 9.0]), pytest.approx([6.0])]


def test_gt_valid_mat_round_trips(mpii_list, tmp_path):
    scipy_io = pytest.importorskip("scipy.io", reason="scipy is not installed: no .mat file can be written")
    joints, visible, boxes = mpii_list
    path = tmp_path / "gt_valid.mat"
    scipy_io.savemat(str(path), {
        "dataset_joints": np.array([["rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
                                     "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri"]], dtype=object),
        "jnt_missing": (~visible).T.astype(np.float64),
        "pos_gt_src": np.transpose(joints, [1, 2, 0]),
        "headboxes_src": headboxes_src(boxes),
    })
    assert read_head_boxes(path, len(boxes)) == pytest.approx(boxes)
    one = tmp_path / "one.mat"
    scipy_io.savemat(str(one), {"headboxes_src": headboxes_src(boxes[:1])})
    assert read_head_boxes(one, 1) == pytest.approx(boxes[:1])


def test_json_round_trips(mpii_list, tmp_path):
    _, _, boxes = mpii_list
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(boxes.tolist()))
    assert read_head_boxes(path, len(boxes)) == pytest.approx(boxes)


def _write_mat(path, **arrays):
    pytest.importorskip("scipy.io", reason="scipy is not installed: no .mat file can be written").savemat(
        str(path), arrays)


@pytest.mark.parametrize("name, write, count, message", [
    ("absent.json", None, 2, "head boxes file not found"),
    ("boxes.json", lambda p: p.write_text("[[0, 0, 10, 10]]"), 2, "1 head boxes for 2 annotated people"),
    ("boxes.json", lambda p: p.write_text("[[0, 0, 10], [0, 0, 10]]"), 2, r"expected a list of \[x1, y1, x2, y2\]"),
    ("boxes.json", lambda p: p.write_text('{"boxes": 1}'), 1, r"expected a list of \[x1, y1, x2, y2\]"),
    ("boxes.json", lambda p: p.write_text("[[0, 0,"), 1, "is not valid JSON"),
    ("boxes.json", lambda p: p.write_text("[[0, 0, 10, 10], [5, 5, 5, 5]]"), 2, "person 1 .* has no size"),
    ("boxes.txt", lambda p: p.write_text("[]"), 0, r"must be MPII's \.mat"),
    ("gt_valid.mat", lambda p: p.write_text("not a mat file"), 1, "not a readable MATLAB file"),
    ("gt_valid.mat", lambda p: _write_mat(p, headboxes_src=np.zeros((2, 3, 4))), 4, r"shape \(2, 3, 4\)"),
    ("gt_valid.mat", lambda p: _write_mat(p, pos_gt_src=np.zeros((16, 2, 4))), 4, "no 'headboxes_src'"),
    ("gt_valid.mat", lambda p: _write_mat(p, headboxes_src=np.ones((2, 2, 3)) * [[[0]], [[1]]]), 4,
     "3 head boxes for 4 annotated people"),
])
def test_bad_head_box_files_are_one_line_errors(tmp_path, name, write, count, message):
    path = tmp_path / name
    if write:
        write(path)
    with pytest.raises(ValueError, match=message) as info:
        read_head_boxes(path, count)
    assert isinstance(info.value, DatasetError)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_mat_without_scipy_says_pip_install_scipy(tmp_path, monkeypatch):
    path = tmp_path / "gt_valid.mat"
    path.write_bytes(b"\0" * 128)
    monkeypatch.setitem(sys.modules, "scipy.io", None)        # import scipy.io now fails as if absent
    with pytest.raises(ValueError, match="pip install scipy") as info:
        read_head_boxes(path, 1)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
