"""Flip test: perfect outputs stay perfect, and mirroring the outputs twice gives them back."""

import numpy as np
import pytest

from rtpose.estimate import limb_flip_permutation, mirror_input, mirror_outputs
from rtpose.model_meta import ModelMeta
from rtpose.preprocess import preprocess
from rtpose.skeleton import COCO, CROWDPOSE, MPII, Skeleton
from rtpose.synthetic.scene import SceneConfig, write_dataset
from trainer.annotations import load_keypoint_set
from trainer.evaluate import _read_image, evaluate
from trainer.targets import encode


class AnnotationEngine:
    """Returns the encoded targets of the annotations for each known input, and of the mirrored
    annotations for that input mirrored: a perfect model, in both orientations."""

    max_batch = None

    def __init__(self, kset, meta: ModelMeta) -> None:
        self.meta = meta
        self.known: list[tuple[np.ndarray, tuple[np.ndarray, ...]]] = []
        perm = list(meta.skeleton.flip_permutation)
        for record in kset.images:
            batch, box = preprocess(_read_image(record.path), meta)
            keypoints = record.keypoints.copy()
            keypoints[..., :2] = box.to_input(keypoints[..., :2])
            areas = record.areas * box.scale ** 2
            mirrored = keypoints[:, perm].copy()
            # Pixel centres at integer coordinates: x -> W-1-x.
            mirrored[..., 0] = meta.input_width - 1 - mirrored[..., 0]
            for image, people in ((batch, keypoints), (mirror_input(batch, meta), mirrored)):
                t = encode(people, areas, meta)
                self.known.append((image[0], (t.heatmaps, t.offsets, t.refinements)))
        self.calls = 0

    def infer(self, batch):
        self.calls += 1
        found = [next(out for image, out in self.known if np.array_equal(image, x)) for x in batch]
        return tuple(np.stack([f[i] for f in found]) for i in range(3))

    def close(self):
        pass


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("flip")
    kset = load_keypoint_set(write_dataset(root, 4, seed=5, config=SceneConfig(width=320, height=256,
                                                                              min_people=2, max_people=5)))
    meta = ModelMeta(input_width=320, input_height=256)
    return kset, meta, AnnotationEngine(kset, meta)


def test_flip_test_of_perfect_outputs_keeps_the_perfect_ap(scenes):
    kset, meta, engine = scenes
    plain = evaluate(engine, kset)
    calls = engine.calls
    flipped = evaluate(engine, kset, flip=True)
    assert engine.calls - calls == 2 * calls                # the mirrored input really ran
    assert plain.stats["AP"] >= 0.95
    assert flipped.stats["AP"] == pytest.approx(plain.stats["AP"], abs=0.01)


def test_mirrored_outputs_of_the_mirrored_input_match_the_plain_outputs(scenes):
    kset, meta, engine = scenes
    for image, plain in engine.known[0::2]:
        back = mirror_outputs(engine.infer(mirror_input(image[None], meta)), meta)
        heatmaps, offsets, refinements = (o[0] for o in back)
        assert np.abs(heatmaps - plain[0]).max() < 1e-5
        # Vectors agree wherever both orientations supervise a cell; where two people's
        # discs touch, the nearer-source tie can go the other way in the mirror.
        assert np.mean(np.isclose(offsets, plain[1], atol=1e-4)) > 0.999
        assert np.mean(np.isclose(refinements, plain[2], atol=1e-4)) > 0.999


# A limb from the left hand to the nose with none from the right hand: not closed under the mirror.
LOPSIDED = Skeleton("lopsided", ("nose", "left_hand", "right_hand"), ((1, 2),), (0.1, 0.1, 0.1), ((1, 0),))


@pytest.mark.parametrize("skeleton", [COCO, CROWDPOSE, MPII, LOPSIDED], ids=lambda s: s.name)
def test_mirroring_twice_is_the_identity_for_every_output(skeleton):
    meta = ModelMeta(input_width=64, input_height=32, skeleton=skeleton)
    rng = np.random.default_rng(0)
    shapes = [(2, skeleton.num_keypoints), (2, skeleton.num_offset_channels), (2, 2 * skeleton.num_keypoints)]
    outputs = tuple(rng.standard_normal((*s, meta.map_height, meta.map_width)).astype(np.float32) for s in shapes)
    once = mirror_outputs(outputs, meta)
    closed = limb_flip_permutation(skeleton) is not None
    assert (once[1] is None) == (not closed)                # no mirror counterpart: the plain offsets are kept
    for i, (plain, mirrored) in enumerate(zip(outputs, once)):
        if mirrored is None:
            continue
        assert not np.array_equal(plain, mirrored)
        assert np.array_equal(mirror_outputs(tuple(mirrored if j == i else o for j, o in enumerate(outputs)),
                                             meta)[i], plain)
    x = rng.standard_normal((1, 3, 32, 64)).astype(np.float32)
    assert np.array_equal(mirror_input(mirror_input(x, meta), meta), x)


def test_flip_test_refuses_peak_outputs():
    meta = ModelMeta(input_width=64, input_height=32, output_names=("peak_scores", "peak_cells", "peak_offsets",
                                                                     "peak_refinements"))
    with pytest.raises(ValueError, match="dense outputs"):
        mirror_outputs(tuple(np.zeros((1, 1, 1, 1)) for _ in range(4)), meta)


@pytest.mark.parametrize("size", [(224, 192), (480, 384)])
def test_outputs_of_another_scale_resampled_onto_the_model_grid_decode_perfectly(shared_data, size):
    """Multi-scale's geometry: perfect outputs at 0.75x or 1.5x the input, resampled onto the 1x map grid
    (two letterboxes, vectors rescaled) and decoded alone on that grid, still give AP ~1 on real COCO
    people (large, in photos of another size and shape than the input)."""
    from dataclasses import replace

    from rtpose.estimate import resample_outputs
    from rtpose.fast_decoder import decode_outputs
    from trainer.evaluate import coco_keypoint_eval, load_coco_gt, people_to_coco

    kset = load_keypoint_set(shared_data / "coco/test_coco.json", shared_data / "coco")
    base = ModelMeta(input_width=320, input_height=256)
    meta = replace(base, input_width=size[0], input_height=size[1])
    engine, at_base = AnnotationEngine(kset, meta), AnnotationEngine(kset, base)
    results, ratios = [], []
    for record in kset.images:
        image = _read_image(record.path)
        tensor, box = preprocess(image, meta)
        base_tensor, base_box = preprocess(image, base)
        outputs = tuple(o[0] for o in engine.infer(tensor))
        resampled = resample_outputs(outputs, meta, box, base, base_box)
        assert resampled[0].shape == (17, base.map_height, base.map_width)
        # Guiding offsets are vectors: resampled, they must have the lengths the 1x targets have.
        want = at_base.infer(base_tensor)[1][0]
        strong = np.abs(want) > 0.5
        ratios.extend(resampled[1][strong] / want[strong])
        people = decode_outputs(resampled, base).map_xy(base_box.to_original)
        results += people_to_coco(record.image_id, people)
    stats, _ = coco_keypoint_eval(load_coco_gt(kset), results, kset.skeleton)
    assert stats["AP"] >= 0.9
    # Inside the supervised regions the lengths agree to within 5% (87% of cells at 0.75x, 37% at 1.5x,
    # whose regions cover less of the image: at their edges, interpolation blends in zeros). Unscaled
    # vectors would leave none there (measured: 0% and 7%).
    ratios = np.asarray(ratios)
    assert len(ratios) > 100 and np.mean(np.abs(ratios - 1) < 0.05) > 0.3


def test_multi_scale_of_perfect_outputs_keeps_the_perfect_ap(scenes):
    from dataclasses import replace

    from rtpose.estimate import estimate_scales
    from trainer.evaluate import coco_keypoint_eval, load_coco_gt, people_to_coco

    kset, meta, _ = scenes
    engines = [AnnotationEngine(kset, replace(meta, input_width=w, input_height=h))
               for w, h in ((320, 256), (224, 192), (480, 384))]
    results = []
    for record in kset.images:
        for people in estimate_scales(engines, [_read_image(record.path)], flip=True):
            results += people_to_coco(record.image_id, people)
    stats, _ = coco_keypoint_eval(load_coco_gt(kset), results, kset.skeleton)
    assert stats["AP"] >= 0.95
    assert all(e.calls == 2 * len(kset.images) for e in engines)   # every scale ran, mirrored too


def test_multi_scale_needs_a_checkpoint(scenes):
    kset, _, engine = scenes
    with pytest.raises(ValueError, match="multi-scale needs a checkpoint"):
        evaluate(engine, kset, scales=(1.0, 1.5))
