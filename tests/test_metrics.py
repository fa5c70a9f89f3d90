"""MPII PCKh and COCO AP as rtpose computes them, against plain reference computations."""

import contextlib
import io

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rtpose.model_meta import ModelMeta
from rtpose.preprocess import letterbox_transform
from trainer.annotations import load_keypoint_set
from trainer.evaluate import coco_keypoint_eval, load_coco_gt
from trainer.pckh import evaluate_pckh, head_sizes_from_joints, pckh_table
from trainer.targets import encode


@pytest.fixture(scope="module")
def mpii(shared_data):
    kset = load_keypoint_set(shared_data / "mpii/test_mpii.json", shared_data / "mpii")
    gt = np.concatenate([r.keypoints for r in kset.images])
    return kset, gt[..., :2].astype(np.float64), gt[..., 2] > 0


def reference_pckh(pred, gt, visible, head, threshold=0.5):
    """The plain formula, joint by joint, in MPII order (0 r_ankle ... 9 head_top ... 15 l_wrist)."""
    n, k = visible.shape
    pck, count = np.zeros(k), np.zeros(k)
    for j in range(k):
        hits = 0
        for i in range(n):
            if visible[i, j]:
                count[j] += 1
                d = np.sqrt((pred[i, j, 0] - gt[i, j, 0]) ** 2 + (pred[i, j, 1] - gt[i, j, 1]) ** 2)
                hits += d <= threshold * head[i]
        pck[j] = 100.0 * hits / count[j]
    rows = {"head": pck[9], "shoulder": (pck[12] + pck[13]) / 2, "elbow": (pck[11] + pck[14]) / 2,
            "wrist": (pck[10] + pck[15]) / 2, "hip": (pck[2] + pck[3]) / 2, "knee": (pck[1] + pck[4]) / 2,
            "ankle": (pck[0] + pck[5]) / 2}
    used = [j for j in range(k) if j not in (6, 7)]            # pelvis and thorax are left out of the mean
    rows["mean"] = sum(pck[j] * count[j] for j in used) / sum(count[j] for j in used)
    return rows


def test_head_size_is_the_head_segment(mpii):
    _, gt, _ = mpii
    first = gt[0]
    assert head_sizes_from_joints(gt)[0] == pytest.approx(np.hypot(*(first[9] - first[8])))


def test_perfect_predictions_score_100(mpii):
    _, gt, visible = mpii
    table = pckh_table(gt, gt, visible, head_sizes_from_joints(gt))
    assert set(table) == {"head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "mean"}
    assert all(v == pytest.approx(100.0) for v in table.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbed_predictions_score_what_the_plain_formula_gives(mpii, seed):
    _, gt, visible = mpii
    rng = np.random.default_rng(seed)
    head = head_sizes_from_joints(gt)
    # Errors around the threshold (0.5 head), so some joints pass and some fail.
    pred = gt + rng.normal(0, 0.4, gt.shape) * head[:, None, None]
    visible = visible & (rng.random(visible.shape) > 0.15)
    got = pckh_table(pred, gt, visible, head)
    want = reference_pckh(pred, gt, visible, head)
    assert got == pytest.approx(want)
    assert 0 < got["mean"] < 100


class AnnotationEngine:
    """An engine whose outputs are the encoded annotations of ``kset``'s images, one image per call, in order."""

    max_batch = 1

    def __init__(self, kset):
        self.meta = ModelMeta(input_width=256, input_height=256, skeleton=kset.skeleton)
        self.records = iter(kset.images)

    def infer(self, batch):
        record = next(self.records)
        h, w = cv2.imread(str(record.path)).shape[:2]
        box = letterbox_transform(w, h, self.meta.input_width, self.meta.input_height)
        kps = record.keypoints.copy()
        kps[..., :2] = box.to_input(kps[..., :2])
        t = encode(kps, record.areas * box.scale ** 2, self.meta)
        return t.heatmaps[None], t.offsets[None], t.refinements[None]

    def close(self):
        pass


def test_pckh_through_the_runtime_with_perfect_maps_is_100(mpii):
    """An engine that outputs the encoded annotations: estimate, decode and match give PCKh 100."""
    kset, _, _ = mpii
    table = evaluate_pckh(AnnotationEngine(kset), kset)
    assert table["mean"] == pytest.approx(100.0)


def test_coco_ap_equals_a_direct_cocoeval_call(shared_data, tmp_path):
    kset = load_keypoint_set(shared_data / "coco/test_coco.json", shared_data / "coco")
    rng = np.random.default_rng(0)
    results = []
    for record in kset.images:
        for person, area in zip(record.keypoints, record.areas):
            kps = person.astype(np.float64).copy()
            # Errors of a few percent of the person's size, so OKS varies around the thresholds.
            kps[:, :2] += rng.normal(0, 0.05 * np.sqrt(area), (len(kps), 2))
            kps[:, 2] = 1.0
            results.append({"image_id": record.image_id, "category_id": 1,
                            "keypoints": kps.reshape(-1).tolist(), "score": float(rng.uniform(0.3, 1.0))})
    stats, _ = coco_keypoint_eval(load_coco_gt(kset), results, kset.skeleton)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(shared_data / "coco/test_coco.json"))
        ev = COCOeval(gt, gt.loadRes(results), "keypoints")       # pycocotools' own defaults
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ["AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75", "AR_medium", "AR_large"]
    assert [stats[n] for n in names] == pytest.approx(list(ev.stats))
    assert 0.2 < stats["AP"] < 0.95


def train_tiny_model(annotations, images, out):
    """A tiny bottom-up model trained one epoch on a sample set; its checkpoint."""
    from tests.conftest import TINY_MODEL
    from trainer.config import load_config
    from trainer.train import train

    config = out / "exp.yaml"
    config.write_text(
        f"train_annotations: {annotations}\ntrain_images: {images}\noutput_dir: {out / 'run'}\n" + TINY_MODEL
        + "epochs: 1\nbatch_size: 2\nworkers: 0\n")
    return train(load_config(config), log=lambda *_: None)


def test_eval_cli_prints_pckh_on_an_mpii_list_file(shared_data, tmp_path):
    """A model trained one epoch on the MPII samples, evaluated as a user runs it."""
    import json

    from typer.testing import CliRunner

    from rtpose.cli import app

    last = train_tiny_model(shared_data / "mpii/test_mpii.json", shared_data / "mpii", tmp_path)
    out = tmp_path / "pckh.json"
    result = CliRunner().invoke(app, ["eval", str(last), "--annotations", str(shared_data / "mpii/test_mpii.json"),
                                      "--images", str(shared_data / "mpii"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "Shoulder" in result.output and "Mean" in result.output
    table = json.loads(out.read_text())["PCKh"]
    assert set(table) == {"head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "mean"}
    # MPII's own head boxes, as a JSON list in list-file order: the table says which head size it used.
    people = json.loads((shared_data / "mpii/test_mpii.json").read_text())
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps([[p["joints"][9][0] - 20, p["joints"][9][1] - 20, p["joints"][9][0] + 20,
                                  p["joints"][9][1] + 20] for p in people]))
    result = CliRunner().invoke(app, ["eval", str(last), "--annotations", str(shared_data / "mpii/test_mpii.json"),
                                      "--images", str(shared_data / "mpii"), "--head-boxes", str(heads)])
    assert result.exit_code == 0, result.output
    assert "0.6 x head box diagonal" in result.output
