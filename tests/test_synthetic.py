"""The synthetic people generator: determinism, COCO files, visibility rules, videos."""

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO as CocoApi

from rtpose.skeleton import COCO
from rtpose.synthetic import (Appearance, FigureSpec, Pose, SceneConfig, clamp_pose, compose_scene, draw_scene,
                              image_rng, iter_video_frames, render_figure, render_scene, write_dataset, write_video)
from rtpose.synthetic.scene import MIN_VISIBLE_PIXELS, random_figures

K = {name: i for i, name in enumerate(COCO.keypoints)}
GREY = np.full((256, 256, 3), 128, np.uint8)


def test_same_seed_gives_identical_scene_and_different_seeds_differ():
    image_a, persons_a = render_scene(image_rng(7, 3))
    image_b, persons_b = render_scene(image_rng(7, 3))
    assert image_a.tobytes() == image_b.tobytes()
    assert len(persons_a) == len(persons_b) > 0
    for a, b in zip(persons_a, persons_b):
        np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
        assert (a["bbox"], a["area"], a["num_keypoints"]) == (b["bbox"], b["area"], b["num_keypoints"])
    assert render_scene(image_rng(8, 3))[0].tobytes() != image_a.tobytes()
    assert render_scene(image_rng(7, 4))[0].tobytes() != image_a.tobytes()


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # its numpy 2 warning
def test_written_dataset_loads_in_pycocotools_and_matches_direct_rendering(tmp_path):
    calls = []
    path = write_dataset(tmp_path / "ds", num_images=4, seed=11, progress=lambda done, total: calls.append((done, total)))
    assert path == tmp_path / "ds" / "annotations.json"
    assert calls[-1] == (4, 4) and len(calls) == 4

    coco = CocoApi(str(path))
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4]
    ann_ids = coco.getAnnIds(catIds=[1], iscrowd=False)
    assert len(ann_ids) == len(coco.dataset["annotations"]) > 0
    category = coco.loadCats(1)[0]
    assert category["keypoints"] == list(COCO.keypoints) and len(category["skeleton"]) == len(COCO.bones)
    for ann in coco.loadAnns(ann_ids):
        assert len(ann["keypoints"]) == 51 and ann["iscrowd"] == 0
        assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])
        assert coco.annToMask(ann).sum() > 0  # the bbox polygon makes a usable mask
    for img in coco.loadImgs(coco.getImgIds()):
        image = cv2.imread(str(tmp_path / "ds" / "images" / img["file_name"]))
        assert image.shape == (img["height"], img["width"], 3)
    assert json.loads(path.read_text())["info"]["seed"] == 11

    # Image 3 does not depend on images 1 and 2 having been made first.
    _, persons = render_scene(image_rng(11, 2))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[3]))
    assert len(anns) == len(persons)
    for ann, person in zip(anns, persons):
        np.testing.assert_allclose(np.reshape(ann["keypoints"], (17, 3)), person["keypoints"], atol=0.006)


def test_keypoint_visibility_follows_coco_rules():
    config = SceneConfig(border_cut_prob=0.5, max_people=8)
    checked = {0: 0, 1: 0, 2: 0}
    for index in range(25):
        rng = image_rng(3, index)
        figures = random_figures(rng, config, 6)
        scene = compose_scene(GREY, figures)
        for p, (person, fig) in enumerate(zip(scene.persons, (figures[i] for i in scene.figure_index)), 1):
            kps, raw = person["keypoints"], fig.keypoints
            v = kps[:, 2]
            inside = (raw[:, 0] >= 0) & (raw[:, 0] < 256) & (raw[:, 1] >= 0) & (raw[:, 1] < 256)
            np.testing.assert_array_equal(v == 0, ~inside)  # v=0 exactly for points outside the image
            assert np.all(kps[v == 0, :2] == 0)
            np.testing.assert_array_equal(kps[v > 0, :2], raw[v > 0])
            xi, yi = np.clip(np.rint(kps[v == 2, :2]).astype(int), 0, 255).T
            assert np.all(scene.person_map[yi, xi] == p)  # visible points lie on the person's own pixels
            assert person["num_keypoints"] == np.count_nonzero(v)
            x, y, w, h = person["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 256 and y + h <= 256 and w * h >= person["area"] > 0
            assert np.count_nonzero(scene.person_map == p) >= MIN_VISIBLE_PIXELS
            for value in checked:
                checked[value] += int(np.count_nonzero(v == value))
    assert min(checked.values()) > 20, checked  # every case actually occurred


def test_person_standing_in_front_hides_the_covered_keypoints():
    behind = render_figure(FigureSpec((150, 150), 100))
    front = render_figure(FigureSpec((120, 240), 200, appearance=Appearance(shirt=(40, 160, 40))))
    assert not behind.self_hidden.any()  # seen from the front, nothing hides itself
    scene = compose_scene(GREY, [behind, front])
    assert scene.figure_index == [0, 1]
    kps = scene.persons[0]["keypoints"]
    xi, yi = np.rint(kps[:, :2]).astype(int).T
    covered = scene.person_map[yi, xi] == 2
    np.testing.assert_array_equal(kps[:, 2] == 1, covered)
    assert covered[[K["right_elbow"], K["right_hip"], K["right_ankle"]]].all()
    assert not covered[[K["nose"], K["left_elbow"], K["left_hip"]]].any()
    assert np.all(scene.persons[1]["keypoints"][:, 2] == 2)  # the front person is fully visible

    # Someone small enough to be hidden entirely is not annotated at all.
    hidden = render_figure(FigureSpec((120, 140), 60))
    assert compose_scene(GREY, [hidden, front]).figure_index == [1]


def test_facing_decides_which_face_points_are_hidden():
    def hidden(yaw):
        fig = render_figure(FigureSpec((128, 240), 200, yaw=yaw))
        return {name for name, h in zip(COCO.keypoints, fig.self_hidden) if h}
    assert hidden("front") == set()
    # Seen from its right, the person's left eye, ear and shoulder are on the far side.
    assert {"left_eye", "left_ear", "left_shoulder"} <= hidden("right_profile")
    assert not {"right_eye", "right_ear", "nose", "right_shoulder"} & hidden("right_profile")
    assert {"right_eye", "right_ear"} <= hidden("left_profile")
    assert {"nose", "left_eye", "right_eye"} <= hidden("back")
    assert not {"left_ear", "right_ear"} & hidden("back")


def test_figure_proportions_and_joint_limits():
    fig = render_figure(FigureSpec((100, 220), 180))
    kps = fig.keypoints
    shoulder_width = abs(kps[K["left_shoulder"], 0] - kps[K["right_shoulder"], 0])
    assert 0.15 * 180 < shoulder_width < 0.25 * 180
    assert kps[K["left_shoulder"], 0] > kps[K["right_shoulder"], 0]  # facing us, their left is our right
    assert kps[K["nose"], 1] < kps[K["left_shoulder"], 1] < kps[K["left_hip"], 1] < kps[K["left_knee"], 1]
    leg = kps[K["left_ankle"], 1] - kps[K["left_hip"], 1]
    assert 0.42 * 180 < leg < 0.52 * 180
    rows = np.flatnonzero(fig.mask.any(axis=1))
    assert 0.95 * 180 < rows[-1] - rows[0] + 1 < 1.05 * 180
    # Elbows and knees only bend one way: a backward bend is straightened.
    straight = render_figure(FigureSpec((100, 220), 180, pose=Pose(elbow_flex=(0, 0), knee_flex=(0, 0))))
    overbent = render_figure(FigureSpec((100, 220), 180, pose=Pose(elbow_flex=(-40, -40), knee_flex=(-40, -40))))
    np.testing.assert_allclose(straight.keypoints, overbent.keypoints)
    assert clamp_pose(Pose(elbow_flex=(-30, 200))).elbow_flex == (0.0, 150.0)
    # A flexed knee in profile puts the ankle behind the knee, never in front.
    profile = render_figure(FigureSpec((100, 220), 180, yaw="right_profile", pose=Pose(knee_flex=(60, 60))))
    assert profile.keypoints[K["right_ankle"], 0] < profile.keypoints[K["right_knee"], 0]


def test_crowded_scene_annotates_at_least_twenty_people():
    config = SceneConfig(width=512, height=512, min_people=20, max_people=30)
    scene = draw_scene(image_rng(0, 0), config)
    assert scene.image.shape == (512, 512, 3)
    assert len(scene.persons) >= 20
    assert sum(np.count_nonzero(p["keypoints"][:, 2] == 1) for p in scene.persons) > 20  # heavy overlap


def test_video_file_and_ground_truth(tmp_path):
    out = write_video(tmp_path / "clip.mp4", seed=5, num_frames=12, width=192, height=112, fps=10)
    assert out == tmp_path / "clip.mp4"
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 12 and frames[0].shape == (112, 192, 3)

    coco = CocoApi(str(out.with_suffix(".json")))
    images = sorted(coco.loadImgs(coco.getImgIds()), key=lambda im: im["id"])
    assert [im["frame_index"] for im in images] == list(range(12))
    assert [im["id"] for im in images] == list(range(1, 13))
    first = {a["track_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[1]))}
    assert first == {1, 2, 3}
    centres = {}
    for im in images:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        assert {a["track_id"] for a in anns} <= first
        for a in anns:  # the same id follows the same person: no jumps between frames
            x, y, w, h = a["bbox"]
            centre = np.array([x + w / 2, y + h / 2])
            if a["track_id"] in centres:
                assert np.linalg.norm(centre - centres[a["track_id"]]) < 25
            centres[a["track_id"]] = centre


def test_video_frames_are_deterministic_and_in_memory():
    a = [frame for frame, _ in iter_video_frames(9, num_frames=3, width=160, height=96)]
    b = list(iter_video_frames(9, num_frames=3, width=160, height=96))
    assert all(x.tobytes() == y.tobytes() for x, (y, _) in zip(a, b))
    assert all(p["track_id"] in {1, 2, 3} for _, persons in b for p in persons)


def test_video_frames_dataset_is_a_loadable_training_set(tmp_path):
    from rtpose.synthetic.video import write_video_dataset
    from trainer.annotations import load_keypoint_set
    path = write_video_dataset(tmp_path, num_videos=2, seed=5, num_frames=10, frame_step=3)
    kset = load_keypoint_set(path)                     # checks every image is on disk
    assert len(kset) == 2 * 4                          # frames 0, 3, 6, 9 of each video
    assert all(len(r.keypoints) >= 1 for r in kset.images)
    again = write_video_dataset(tmp_path / "again", num_videos=2, seed=5, num_frames=10, frame_step=3)
    assert again.read_text() == path.read_text()       # deterministic by seed


def test_synth_dataset_command_keeps_people_within_the_heights_asked(tmp_path):
    from typer.testing import CliRunner
    from rtpose.cli import app
    runner = CliRunner()

    def box_heights(name, *options):
        result = runner.invoke(app, ["synth", "dataset", str(tmp_path / name), "--images", "12", "--seed", "5",
                                     "--min-people", "2", *options])
        assert result.exit_code == 0, result.output
        return np.array([p["bbox"][3] for p in json.loads((tmp_path / name / "annotations.json").read_text())
                         ["annotations"]])

    capped, default = box_heights("small", "--min-height", "30", "--max-height", "0.4"), box_heights("default")
    cap = 0.4 * 256
    # The cap is on standing height: a raised arm can reach above the head (up to 1.24x in 1,186 boxes).
    assert len(capped) >= 24 and capped.max() <= 1.3 * cap and np.percentile(capped, 90) <= cap
    assert default.max() > 1.3 * cap
    result = runner.invoke(app, ["synth", "dataset", str(tmp_path / "none"), "--min-height", "120",
                                 "--max-height", "0.4"])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: the shortest person (120 px) is taller than the tallest "
                                     "(0.4 of 256 px = 102 px)")
