"""The fast decoder against the plain one, and peaks found in the graph against numpy's find_peaks.

The plain chain (:func:`rtpose.decoder.decode`) is the reference: on real
model outputs, on synthetic crowds and under each decoder knob,
:func:`rtpose.fast_decoder.decode_outputs` must give the same people, from dense
maps and from in-graph peaks.
"""

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from export.onnx_file import read_onnx_meta
from export.peak_graph import add_peak_outputs, dense_maps_model
from rtpose.cli import app
from rtpose.decoder import decode, find_peaks, regress_peaks
from rtpose.fast_decoder import decode_outputs
from rtpose.engine import open_engine
from rtpose.fast_decoder import PEAK_OUTPUTS, peaks_from_graph, peaks_from_maps
from rtpose.model_meta import DecoderConfig, ModelMeta
from rtpose.preprocess import preprocess
from rtpose.synthetic.scene import SceneConfig, draw_scene, image_rng
from trainer.targets import encode

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "rtpose" / "models" / "default.onnx"
TOP_K = 40          # peaks per keypoint type the test graphs find
DENSE = ("heatmaps", "offsets", "refinements")


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def split(meta: ModelMeta, outputs: list[np.ndarray], i: int) -> tuple[tuple, tuple]:
    """Image ``i``'s dense outputs and its peak outputs, from a run of a model that has both."""
    named = dict(zip(meta.output_names, outputs))
    return tuple(named[n][i] for n in DENSE), tuple(named[n][i] for n in PEAK_OUTPUTS)


def assert_same_people(got, want):
    assert len(got) == len(want)
    # 1e-4 px: the graph sums the refinement votes in another order than numpy (a float32 ulp apart).
    np.testing.assert_allclose(got.keypoints, want.keypoints, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)


def assert_same_peaks(got, want):
    np.testing.assert_array_equal(got.kind, want.kind)
    np.testing.assert_array_equal(got.cell, want.cell)
    np.testing.assert_array_equal(got.score, want.score)


@pytest.fixture(scope="module")
def real(shared_data):
    """The shipped model on real images and video frames: (dense meta, peak meta, per-image dense and peak outputs)."""
    dense_model = onnx.load(str(DEFAULT_MODEL))
    both = add_peak_outputs(dense_model, TOP_K, keep_dense=True)
    meta = read_onnx_meta(both)
    images = [cv2.imread(str(p)) for p in sorted((shared_data / "coco").glob("*.jpg"))]
    video = cv2.VideoCapture(str(shared_data / "video" / "vtest.avi"))
    for index in range(121):
        ok, frame = video.read()
        if ok and index % 40 == 0:
            images.append(frame)
    video.release()
    batch = np.concatenate([preprocess(image, meta)[0] for image in images])
    outputs = session(both).run(None, {meta.input_name: batch})
    peak_meta = replace(meta, output_names=PEAK_OUTPUTS)
    return read_onnx_meta(dense_model), peak_meta, [split(meta, outputs, i) for i in range(len(images))]


@pytest.fixture(scope="module")
def crowds():
    """Targets encoded from synthetic scenes of 1 to 30 people, with their in-graph peaks."""
    meta = ModelMeta(decoder=DecoderConfig(max_persons=60))
    config = SceneConfig(width=meta.input_width, height=meta.input_height)
    maps = []
    for count in (1, 5, 10, 20, 30):
        scene = draw_scene(image_rng(11, count), replace(config, min_people=count, max_people=count))
        keypoints = np.array([p["keypoints"] for p in scene.persons], np.float32)
        targets = encode(keypoints, np.array([p["area"] for p in scene.persons]), meta)
        maps.append((targets.heatmaps, targets.offsets, targets.refinements))
    finder = add_peak_outputs(dense_maps_model(meta), TOP_K)
    # All scenes in one batch: the peak graph takes any batch size.
    feed = {f"{name}_in": np.stack([m[c] for m in maps]) for c, name in enumerate(DENSE)}
    peaks = session(finder).run(None, feed)
    peak_meta = read_onnx_meta(finder)
    return meta, peak_meta, [(m, tuple(p[i] for p in peaks)) for i, m in enumerate(maps)]


def people_found_by_all_three(meta, peak_meta, cases) -> int:
    """Checks both fast paths against the reference on each case; returns how many people it found."""
    found = 0
    for dense, peaks in cases:
        want = decode(*dense, meta)
        assert_same_people(decode_outputs(dense, meta), want)
        assert_same_people(decode_outputs(peaks, peak_meta), want)
        found += len(want)
    return found


def test_fast_decoder_gives_the_reference_people_on_real_model_outputs(real):
    assert people_found_by_all_three(*real) > 0


def test_fast_decoder_gives_the_reference_people_on_synthetic_crowds(crowds):
    assert people_found_by_all_three(*crowds) >= 0.8 * (1 + 5 + 10 + 20 + 30)


KNOBS = [
    {"heatmap_threshold": 0.3},
    {"top_k": 5},
    {"top_k": TOP_K},
    {"max_offset_distance": 1.0},
    {"max_offset_distance": 8.0},
    {"person_threshold": 0.4},
    {"max_persons": 3},
    {"min_keypoints": 1},
    {"min_keypoints": 6},
    {"fill_threshold": 0.3},
    {"fill_threshold": 1.0},
]


@pytest.mark.parametrize("knob", KNOBS, ids=lambda k: "-".join(f"{n}={v}" for n, v in k.items()))
def test_decoder_knobs_act_alike_on_both_paths(real, crowds, knob):
    for meta, peak_meta, images in (real, crowds):
        config = replace(meta.decoder, **knob)
        for dense, peaks in images[::2]:
            want = decode(*dense, meta, config)
            assert_same_people(decode_outputs(dense, meta, config), want)
            assert_same_people(decode_outputs(peaks, peak_meta, config), want)


def test_decoder_knobs_change_the_result(crowds):
    meta, peak_meta, scenes = crowds
    _, peaks = scenes[-1]                                     # 30 people
    everyone = decode_outputs(peaks, peak_meta)
    assert len(decode_outputs(peaks, peak_meta, replace(meta.decoder, max_persons=3))) == 3
    assert len(decode_outputs(peaks, peak_meta, replace(meta.decoder, top_k=5))) < len(everyone)


def test_top_k_beyond_the_graph_is_a_clear_error(crowds):
    meta, peak_meta, scenes = crowds
    _, peaks = scenes[0]
    with pytest.raises(ValueError, match=f"top_k {TOP_K + 1} is more than the {TOP_K} peaks"):
        decode_outputs(peaks, peak_meta, replace(meta.decoder, top_k=TOP_K + 1))


def test_dense_maps_without_refinements_use_the_parabola(crowds):
    meta, _, scenes = crowds
    heatmaps, offsets, _ = scenes[2][0]
    two = replace(meta, output_names=("heatmaps", "offsets"))
    assert_same_people(decode_outputs((heatmaps, offsets), two), decode(heatmaps, offsets, None, meta))


def test_outputs_of_another_skeleton_are_refused(crowds):
    meta, _, _ = crowds
    with pytest.raises(ValueError, match="do not fit skeleton"):
        decode_outputs((np.zeros((3, 8, 8), np.float32), np.zeros((8, 8, 8), np.float32)), meta)


def tricky_maps(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """Heatmaps full of ties: values on a 0.1 grid (plateaus, equal peaks far apart), flat tops, borders."""
    maps = np.round(rng.random((k, h, w)), 1).astype(np.float32)
    maps[0] = 0.0
    maps[0, 2, 3:5] = 0.8                   # flat top across
    maps[0, 5:7, 1] = 0.7                   # flat top down
    maps[0, 8:10, 8:10] = 0.6               # 2x2 flat top
    maps[0, 0, 0] = maps[0, -1, -1] = 0.9   # corners
    maps[1] = 0.0                           # a type with no peak at all
    return maps


@pytest.mark.parametrize("threshold, top_k", [(0.1, 40), (0.1, 3), (0.55, 8), (0.0, 100)])
def test_in_graph_peaks_equal_find_peaks(threshold, top_k):
    meta = ModelMeta(input_width=64, input_height=48)          # 16 x 12 maps
    heatmaps = tricky_maps(np.random.default_rng(0), meta.skeleton.num_keypoints, meta.map_height, meta.map_width)
    finder = session(add_peak_outputs(dense_maps_model(meta), 100))
    zeros = {f"{n}_in": np.zeros((1, c, meta.map_height, meta.map_width), np.float32)
             for n, c in (("offsets", meta.skeleton.num_offset_channels), ("refinements", 2 * len(heatmaps)))}
    scores, cells, _, _ = finder.run(None, {"heatmaps_in": heatmaps[None], **zeros})
    want = find_peaks(heatmaps, threshold, top_k)
    assert len(want) > 0 and len(set(want.kind.tolist())) > 10
    if threshold < 0.6 and top_k >= 5:     # each flat top gives one peak, at its upper-left cell
        assert sorted(want.cell[want.kind == 0].tolist()) == [[0, 0], [1, 5], [3, 2], [8, 8], [15, 11]]
    got, _ = peaks_from_graph(scores[0], cells[0], threshold, top_k, meta.map_width)
    assert_same_peaks(got, want)
    got, cell = peaks_from_maps(heatmaps, threshold, top_k)
    assert_same_peaks(got, want)
    np.testing.assert_array_equal(cell, want.cell[:, 1] * meta.map_width + want.cell[:, 0])


def test_in_graph_peaks_carry_their_offsets_and_voted_refinements(real):
    meta, _, images = real
    (heatmaps, offsets, refinements), (scores, cells, peak_offsets, peak_refinements) = images[0]
    threshold = meta.decoder.heatmap_threshold
    peaks, slot = peaks_from_graph(scores, cells, threshold, TOP_K, meta.map_width)
    assert_same_peaks(peaks, find_peaks(heatmaps, threshold, TOP_K))
    x, y = peaks.cell[:, 0], peaks.cell[:, 1]
    voted = regress_peaks(heatmaps, refinements, peaks).xy - peaks.cell
    np.testing.assert_allclose(peak_refinements[peaks.kind, :, slot], voted, rtol=0, atol=1e-5)
    own = np.stack([refinements[2 * peaks.kind, y, x], refinements[2 * peaks.kind + 1, y, x]], axis=1)
    assert np.abs(voted - own).max() > 0.01       # the vote moved peaks from where their own cell says
    for limb, (a, _) in enumerate(meta.skeleton.directed_limbs):
        mine = peaks.kind == a
        np.testing.assert_array_equal(peak_offsets[limb, :, slot[mine]].T,
                                      offsets[2 * limb:2 * limb + 2, y[mine], x[mine]])


def test_peak_model_runs_with_any_batch_and_describes_itself(shared_data):
    peak_model = add_peak_outputs(onnx.load(str(DEFAULT_MODEL)), TOP_K)
    meta = read_onnx_meta(peak_model)
    assert meta.output_names == PEAK_OUTPUTS and meta.peak_top_k == TOP_K
    assert meta.input_format == read_onnx_meta(onnx.load(str(DEFAULT_MODEL))).input_format
    runner = session(peak_model)
    images = [cv2.imread(str(p)) for p in sorted((shared_data / "coco").glob("*.jpg"))[:3]]
    batch = np.concatenate([preprocess(image, meta)[0] for image in images])
    together = runner.run(None, {meta.input_name: batch})
    k, limbs = meta.skeleton.num_keypoints, len(meta.skeleton.directed_limbs)
    assert [o.shape for o in together] == [(3, k, TOP_K), (3, k, TOP_K), (3, limbs, 2, TOP_K), (3, k, 2, TOP_K)]
    assert together[1].dtype == np.int64
    alone = runner.run(None, {meta.input_name: batch[2:3]})
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a[0], b[2], atol=1e-5)


def test_shipped_model_metadata_still_loads_with_no_peaks():
    assert read_onnx_meta(onnx.load(str(DEFAULT_MODEL))).peak_top_k == 0
    assert ModelMeta.from_json(ModelMeta().to_json().replace('"peak_top_k": 0, ', "")).peak_top_k == 0


def test_cli_adds_peaks_to_an_exported_model(tmp_path):
    out = tmp_path / "peaks.onnx"
    result = CliRunner().invoke(app, ["export", str(DEFAULT_MODEL), "--peak-top-k", "20", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "peaks, all equal" in result.output
    engine = open_engine(out)
    assert engine.meta.output_names == PEAK_OUTPUTS and engine.meta.peak_top_k == 20
    assert engine.meta.decoder.top_k == 20          # the file's own default fits its graph
    again = CliRunner().invoke(app, ["export", str(out), "--peak-top-k", "20", "--output", str(tmp_path / "x.onnx")])
    assert again.exit_code == 1 and "outputs peaks already" in again.output
