"""CrowdPose AP by crowd level, on the real sample, against direct pycocotools calls."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rtpose.skeleton import CROWDPOSE
from trainer.annotations import DatasetError
from tests.test_metrics import train_tiny_model
from trainer.crowdpose import crowd_levels, crowdpose_keypoint_eval

# crowdposetools' computeOks, written out rather than read from rtpose's skeleton.
TOOLKIT_SIGMAS = np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79]) / 10.0


def load_gt(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture
def sample(shared_data):
    return shared_data / "crowdpose/test_crowdpose.json"


@pytest.fixture
def three_levels(sample, tmp_path):
    """The sample with one image in each crowd level: 106848 easy, a copy of 103319 medium, 103319 hard."""
    data = json.loads(sample.read_text())
    index = {img["id"]: img for img in data["images"]}
    index[106848]["crowdIndex"], index[103319]["crowdIndex"] = 0.05, 0.9
    data["images"].append({**index[103319], "id": 1, "crowdIndex": 0.5})
    copies = [{**ann, "id": 900000 + i, "image_id": 1}
              for i, ann in enumerate(data["annotations"]) if ann["image_id"] == 103319]
    data["annotations"].extend(copies)
    path = tmp_path / "three_levels.json"
    path.write_text(json.dumps(data))
    return path


def perfect_results(gt: COCO) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": 1, "keypoints": list(a["keypoints"]), "score": 1.0}
            for a in gt.dataset["annotations"] if a["num_keypoints"] > 0]


def perturbed_results(gt: COCO, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    results = []
    for result in perfect_results(gt):
        kps = np.asarray(result["keypoints"], dtype=np.float64).reshape(-1, 3)
        ann = next(a for a in gt.dataset["annotations"] if a["keypoints"] == result["keypoints"])
        # Errors of a few percent of the person's size, so OKS varies around the thresholds.
        kps[:, :2] += rng.normal(0, 0.06 * np.sqrt(ann["bbox"][2] * ann["bbox"][3]), (len(kps), 2))
        kps[:, 2] = 1.0
        results.append({**result, "keypoints": kps.reshape(-1).tolist(), "score": float(rng.uniform(0.3, 1.0))})
    return results


def direct_cocoeval(annotation_file, results, image_ids, tmp_path) -> np.ndarray:
    """pycocotools' defaults, the toolkit's sigmas and OKS area (0.53 x box) written into the file."""
    data = json.loads(annotation_file.read_text())
    for ann in data["annotations"]:
        ann["area"] = 0.53 * ann["bbox"][2] * ann["bbox"][3]
    path = tmp_path / "with_area.json"
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints")
        ev.params.kpt_oks_sigmas = TOOLKIT_SIGMAS
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_rtpose_crowdpose_sigmas_are_the_toolkits():
    assert np.asarray(CROWDPOSE.sigmas) == pytest.approx(TOOLKIT_SIGMAS)


def test_perfect_predictions_score_1_and_empty_levels_minus_1(sample):
    gt = load_gt(sample)
    stats, table = crowdpose_keypoint_eval(gt, perfect_results(gt), CROWDPOSE)
    assert set(stats) == {"AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard"}
    # The sample's crowd indices are 0.33 and 0.39: both images are medium.
    assert crowd_levels(gt) == {"easy": [], "medium": [103319, 106848], "hard": []}
    for name in ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_medium"):
        assert stats[name] == pytest.approx(1.0), name
    assert stats["AP_easy"] == stats["AP_hard"] == -1.0
    lines = {line.split("type=")[1].split("|")[0].strip(): line for line in table.splitlines() if "type=" in line}
    assert "(no images)" in lines["easy"] and "(no images)" in lines["hard"]
    assert "(2 images)" in lines["medium"]
    assert all("area" not in a for a in gt.dataset["annotations"])        # the caller's ground truth is untouched


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("which", ["sample", "three_levels"])
def test_perturbed_predictions_equal_direct_cocoeval_calls(which, seed, request, tmp_path):
    annotation_file = request.getfixturevalue(which)
    gt = load_gt(annotation_file)
    results = perturbed_results(gt, seed)
    stats, _ = crowdpose_keypoint_eval(gt, results, CROWDPOSE)
    direct = direct_cocoeval(annotation_file, results, gt.getImgIds(), tmp_path)
    assert [stats[n] for n in ("AP", "AP50", "AP75", "AR", "AR50", "AR75")] == pytest.approx(
        [direct[i] for i in (0, 1, 2, 5, 6, 7)])
    for level, ids in crowd_levels(gt).items():
        want = direct_cocoeval(annotation_file, results, ids, tmp_path)[0] if ids else -1.0
        assert stats[f"AP_{level}"] == pytest.approx(want), level
    assert 0.05 < stats["AP"] < 0.95


def test_each_crowd_level_has_its_image(three_levels):
    gt = load_gt(three_levels)
    assert crowd_levels(gt) == {"easy": [106848], "medium": [1], "hard": [103319]}
    stats, table = crowdpose_keypoint_eval(gt, perfect_results(gt), CROWDPOSE)
    assert [stats[f"AP_{level}"] for level in ("easy", "medium", "hard")] == pytest.approx([1.0, 1.0, 1.0])
    assert "(no images)" not in table and table.count("(1 image)") == 3


@pytest.mark.parametrize("crowd_index, level, bounds", [
    (0.0, "easy", (0.2, 0.8)), (0.1999, "easy", (0.2, 0.8)), (0.2, "medium", (0.2, 0.8)),
    (0.7999, "medium", (0.2, 0.8)), (0.8, "hard", (0.2, 0.8)), (1.0, "hard", (0.2, 0.8)),
    (0.15, "medium", (0.1, 0.8)),
])
def test_crowd_level_bounds_are_the_toolkits(sample, tmp_path, crowd_index, level, bounds):
    """The toolkit: easy below ``first``, medium below ``second``, hard from ``second`` up."""
    data = json.loads(sample.read_text())
    for img in data["images"]:
        img["crowdIndex"] = crowd_index
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    levels = crowd_levels(load_gt(path), bounds)
    assert levels[level] == [103319, 106848]
    assert sum(len(ids) for ids in levels.values()) == 2


def test_without_crowd_index_there_are_no_levels_but_still_ap(sample, tmp_path):
    """14 CrowdPose keypoints in a user's own file without crowdIndex: AP and AR, no crowd levels."""
    data = json.loads(sample.read_text())
    del data["images"][0]["crowdIndex"]
    path = tmp_path / "no_index.json"
    path.write_text(json.dumps(data))
    gt = load_gt(path)
    with pytest.raises(DatasetError, match="image 106848 has no crowdIndex") as info:
        crowd_levels(gt)
    assert "\n" not in str(info.value)
    stats, table = crowdpose_keypoint_eval(gt, perfect_results(gt), CROWDPOSE)
    assert stats["AP"] == pytest.approx(1.0) and "AP_easy" not in stats and "type=" not in table


def test_eval_cli_reports_crowd_levels_on_crowdpose(shared_data, tmp_path):
    """A 14-keypoint model trained one epoch on the CrowdPose sample, evaluated as a user runs it."""
    from typer.testing import CliRunner

    from rtpose.cli import app

    annotations = shared_data / "crowdpose/test_crowdpose.json"
    last = train_tiny_model(annotations, shared_data / "crowdpose", tmp_path)
    out = tmp_path / "ap.json"
    result = CliRunner().invoke(app, ["eval", str(last), "--annotations", str(annotations),
                                      "--images", str(shared_data / "crowdpose"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "type=medium" in result.output and "type=  easy" in result.output
    figures = json.loads(out.read_text())
    assert figures["AP_easy"] == -1.0 and figures["AP_hard"] == -1.0 and 0.0 <= figures["AP_medium"] <= 1.0
