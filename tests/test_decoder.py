"""Each decoder step alone, on small hand-written maps, then the chain on encoded targets."""

from dataclasses import replace

import numpy as np
import pytest

from rtpose.decoder import (LOCALISATION_ERROR, Peaks, assemble_people, connect_limbs, decode, drop_duplicates, fill_missing, find_peaks,
                            input_to_map, map_to_input, refine_peaks, regress_peaks, score_people, size_factor)
from rtpose.model_meta import DecoderConfig, ModelMeta
from rtpose.skeleton import COCO, Skeleton
from trainer.targets import encode

# Three keypoints in a chain: a - b - c.
CHAIN = Skeleton("chain", ("a", "b", "c"), (), (0.1, 0.1, 0.1), ((0, 1), (1, 2)))


def gaussian(h, w, x, y, sigma=1.0):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def test_find_peaks_keeps_local_maxima_above_threshold():
    heat = np.zeros((2, 6, 6), np.float32)
    heat[0, 1, 1], heat[0, 4, 4], heat[0, 4, 3] = 0.9, 0.5, 0.4   # (4,3) is beside a higher one
    heat[1, 2, 2] = 0.05                                              # below threshold
    peaks = find_peaks(heat, threshold=0.1, top_k=10)
    assert sorted(map(tuple, peaks.cell.tolist())) == [(1, 1), (4, 4)]
    assert set(peaks.kind.tolist()) == {0}


def test_find_peaks_plateau_gives_one_peak_and_top_k_keeps_best():
    heat = np.zeros((1, 5, 8), np.float32)
    heat[0, 2, 2] = heat[0, 2, 3] = 0.7       # flat top of two cells
    heat[0, 0, 6], heat[0, 4, 6] = 0.3, 0.5
    assert len(find_peaks(heat, 0.1, top_k=10)) == 3
    best = find_peaks(heat, 0.1, top_k=2)
    assert sorted(best.score.tolist()) == pytest.approx([0.5, 0.7])


@pytest.mark.parametrize("x, y", [(3.3, 4.7), (5.0, 5.0), (2.6, 3.45)])
def test_refine_peaks_is_exact_on_a_gaussian(x, y):
    heat = gaussian(10, 10, x, y, sigma=1.3)[None]
    peaks = refine_peaks(heat, find_peaks(heat, 0.1, 5))
    assert len(peaks) == 1
    assert peaks.xy[0] == pytest.approx([x, y], abs=1e-3)


def test_map_and_input_coordinates_are_inverse():
    xy = np.array([[0.0, 0.0], [17.25, 100.5]])
    assert map_to_input(input_to_map(xy, 4), 4) == pytest.approx(xy)
    assert input_to_map(np.array([1.5, 5.5]), 4) == pytest.approx([0.0, 1.0])   # cell centres


def _two_chains():
    """Two people side by side: a above b above c, 3 cells apart; offsets exact."""
    people = [np.array([[2.0, 1.0], [2.0, 4.0], [2.0, 7.0]]), np.array([[8.0, 1.0], [8.0, 4.0], [8.0, 7.0]])]
    kinds = np.array([0, 1, 2, 0, 1, 2])
    cells = np.concatenate(people).astype(np.int64)
    peaks = Peaks(kind=kinds, cell=cells, xy=cells.astype(np.float32), score=np.full(6, 0.9, np.float32))
    offsets = np.zeros((CHAIN.num_offset_channels, 10, 12), np.float32)
    for person in people:
        for d, (a, b) in enumerate(CHAIN.directed_limbs):
            (xa, ya), (xb, yb) = person[a].astype(int), person[b]
            offsets[2 * d:2 * d + 2, ya, xa] = (xb - xa, yb - ya)
    return peaks, offsets


def test_connect_limbs_pairs_each_guide_with_its_own_person():
    peaks, offsets = _two_chains()
    connections = connect_limbs(peaks, offsets, CHAIN, offset_scale=1.0, max_distance=1.0)
    pairs = {(int(a), int(b)) for a, b, _ in connections}
    assert pairs == {(0, 1), (1, 2), (3, 4), (4, 5)}


def test_assemble_people_groups_greedily_without_duplicate_keypoint_types():
    peaks, offsets = _two_chains()
    connections = connect_limbs(peaks, offsets, CHAIN, 1.0, 1.0)
    # A wrong, weaker connection across people must not join them.
    connections = np.concatenate([connections, [[0, 4, 0.1]]])
    people = assemble_people(peaks, connections, 3, min_keypoints=2)
    assert sorted(map(tuple, people.tolist())) == [(0, 1, 2), (3, 4, 5)]


def test_assemble_people_merges_partial_people():
    peaks, _ = _two_chains()
    # a-b and b-c of the first person arrive as separate parts, then join through b.
    connections = np.array([[0, 1, 0.9], [1, 2, 0.8]])
    assert assemble_people(peaks, connections, 3, 2).tolist() == [[0, 1, 2]]
    # Parts of two people that no connection links stay two people.
    halves = np.array([[0, 1, 0.9], [4, 5, 0.8]])
    assert len(assemble_people(peaks, halves, 3, 2)) == 2


def test_score_people_orders_and_thresholds():
    peaks, _ = _two_chains()
    peaks = Peaks(peaks.kind, peaks.cell, peaks.xy, np.array([0.9, 0.9, 0.9, 0.2, 0.2, 0.0], np.float32))
    sigmas = np.array(CHAIN.sigmas)
    people = score_people(peaks, np.array([[3, 4, -1], [0, 1, 2]]), 0.05, 5, sigmas)
    # The mean score of the keypoints found, times the fraction found to the power 1/4, times the size factor.
    # Both chains are upright lines: no area, which counts as 1 map pixel squared.
    kept = np.exp(-LOCALISATION_ERROR ** 2 / (2 * 1.0 * 0.2 ** 2))
    assert people.scores.tolist() == pytest.approx([0.9 * kept, 0.2 * (2 / 3) ** 0.25 * kept])
    assert people.keypoints[1, 2].tolist() == [0.0, 0.0, 0.0]       # missing keypoint
    assert len(score_people(peaks, np.array([[3, 4, -1], [0, 1, 2]]), 0.3, 5, sigmas)) == 1
    # The threshold applies before the size factor: the second person's keypoints (0.2 * (2/3)^(1/4) = 0.18)
    # pass 0.15 though its ranking score (0.08) does not; its size speaks to where it ranks, not to whether
    # it is a person (people cut by the image border, small people in crowds).
    assert len(score_people(peaks, np.array([[3, 4, -1], [0, 1, 2]]), 0.15, 5, sigmas)) == 2
    # Filled keypoints are placed but do not score: only the grouped ones do.
    filled = score_people(peaks, np.array([[3, 4, 5]]), 0.0, 5, sigmas, grouped=np.array([[True, True, False]]))
    assert filled.scores.tolist() == pytest.approx([0.2 * (2 / 3) ** 0.25 * kept])


def test_size_factor_ranks_a_small_person_below_a_large_one():
    sigmas = np.array(COCO.sigmas)
    pose = np.random.default_rng(0).uniform(0, 1, (COCO.num_keypoints, 2)).astype(np.float32)
    found = np.ones((3, COCO.num_keypoints), bool)
    found[2, 5:] = False                           # the large person again, with only its head
    small, large, head = size_factor(np.stack([pose * 4, pose * 40, pose * 40]), found, sigmas)
    assert 0 < small < large < 1 and large > 0.97
    assert head < large            # a smaller box, and the head's keypoints have COCO's smallest sigmas
    # A person of one keypoint has no extent: it counts as 1 map pixel squared.
    lone = size_factor(np.zeros((1, 1, 2), np.float32), np.ones((1, 1), bool), np.array([0.1]))
    assert lone.tolist() == pytest.approx([np.exp(-LOCALISATION_ERROR ** 2 / (2 * 0.2 ** 2))])


def test_drop_duplicates_drops_people_most_of_whose_peaks_a_better_one_has():
    # Peak indices per keypoint of three five-keypoint people, best first. The second
    # has 4 of its 5 peaks from the first (a fragment filled from it): a copy. The
    # third shares 3 of 5 (people overlapping): kept.
    assignment = np.array([[0, 1, 2, 3, 4], [5, 1, 2, 3, 4], [6, 7, 2, 3, -1], [8, 9, -1, -1, -1]])
    assert drop_duplicates(assignment, np.arange(4)).tolist() == [0, 2, 3]
    # The better-ranked of two keeps its place; the other is the copy.
    assert drop_duplicates(assignment, np.array([1, 0, 2, 3])).tolist() == [1, 2, 3]


def _weak_chain():
    """a (strong) then b and c (weak, 0.1) 3 cells apart, each guiding to the next; a strong decoy b 4 cells aside.

    Peaks sorted by type, as the peak finders give them: a, b, the decoy b, c.
    """
    cells = np.array([[2, 1], [2, 4], [6, 4], [2, 7]])
    peaks = Peaks(kind=np.array([0, 1, 1, 2]), cell=cells, xy=cells.astype(np.float32),
                  score=np.array([0.9, 0.1, 0.95, 0.1], np.float32))
    offsets = np.zeros((len(CHAIN.directed_limbs), 2, 10 * 12), np.float32)    # table [L, 2, cells]
    where = cells[:, 1] * 12 + cells[:, 0]
    offsets[0, :, where[0]] = (0, 3)                                           # a -> b
    offsets[2, :, where[1]] = (0, 3)                                           # b -> c
    return peaks, where, offsets


def test_fill_missing_follows_the_guides_from_peak_to_peak():
    peaks, where, offsets = _weak_chain()
    alone = np.array([[0, -1, -1]])
    # Through the weak b on to c; the stronger decoy is beyond the radius of the guided point.
    assert fill_missing(alone, peaks, where, offsets, CHAIN, 1.0, threshold=0.05, radius=1.0).tolist() == [[0, 1, 3]]
    # Peaks at or below the fill threshold fill nothing; a threshold of 1 turns filling off.
    for threshold in (0.1, 1.0):
        assert fill_missing(alone, peaks, where, offsets, CHAIN, 1.0, threshold, 1.0).tolist() == [[0, -1, -1]]
    # Within the radius the best peak wins; it then guides on (here, nowhere near c).
    assert fill_missing(alone, peaks, where, offsets, CHAIN, 1.0, 0.05, radius=4.5).tolist() == [[0, 2, -1]]


def test_a_keypoint_hidden_behind_another_persons_is_filled_from_the_shared_peak():
    """Two people, one a step behind the other, its left knee 1 px beside the front one's: one peak for both."""
    meta = ModelMeta()
    front = np.array([[100, 40], [104, 36], [96, 36], [110, 38], [90, 38], [120, 70], [80, 70], [126, 110],
                      [74, 110], [128, 145], [72, 145], [114, 150], [86, 150], [116, 200], [84, 200], [118, 245],
                      [82, 245]], np.float32)
    behind = front + (30, 0)
    knee = COCO.keypoints.index("left_knee")
    behind[knee] = front[knee] + (1, 0)
    truth = np.concatenate([np.stack([front, behind]), np.full((2, 17, 1), 2, np.float32)], axis=2)
    targets = encode(truth, np.array([20000.0, 20000.0]), meta)

    def knees(fill_threshold):
        config = replace(meta.decoder, fill_threshold=fill_threshold)
        people = decode(targets.heatmaps, targets.offsets, targets.refinements, meta, config)
        assert len(people) == 2
        return people.keypoints[:, knee]

    assert (knees(1.0)[:, 2] > 0).sum() == 1                   # grouped: the peak goes to one person
    filled = knees(0.05)
    assert (filled[:, 2] > 0).all()
    assert np.abs(filled[:, :2] - front[knee]).max() <= 1.5    # both at the shared knee


@pytest.mark.parametrize("with_refinements", [True, False])
def test_decode_recovers_encoded_people_in_input_pixels(with_refinements):
    meta = ModelMeta(input_width=96, input_height=64, skeleton=CHAIN, decoder=DecoderConfig(heatmap_threshold=0.2))
    truth = np.array([[[20.3, 10.2, 2], [22.1, 30.7, 2], [19.4, 52.9, 2]],
                      [[70.0, 12.0, 2], [66.2, 33.1, 1], [71.8, 50.4, 2]]], np.float32)
    targets = encode(truth, np.array([1500.0, 1500.0]), meta)
    refinements = targets.refinements if with_refinements else None
    people = decode(targets.heatmaps, targets.offsets, refinements, meta)
    assert len(people) == 2
    found = people.keypoints[np.argsort(people.keypoints[:, 0, 0])]
    assert found[..., :2] == pytest.approx(truth[..., :2], abs=0.05)


def test_regress_peaks_places_a_lone_peak_by_its_own_refinement():
    heatmaps = np.zeros((1, 4, 4), np.float32)
    heatmaps[0, 1, 2], heatmaps[0, 3, 0] = 0.9, 0.8           # no heat around them: only their own cells vote
    refinements = np.zeros((2, 4, 4), np.float32)
    refinements[:, 1, 2] = (0.3, -0.4)
    refinements[:, 3, 0] = (5.0, 0.0)                          # beyond the limit: clipped
    cells = np.array([[2, 1], [0, 3]])
    peaks = Peaks(np.array([0, 0]), cells, cells.astype(np.float32), np.array([0.9, 0.8], np.float32))
    assert np.allclose(regress_peaks(heatmaps, refinements, peaks).xy, [[2.3, 0.6], [1.5, 3.0]])


def test_regress_peaks_averages_the_votes_of_the_cells_around_a_peak():
    heatmaps = np.zeros((1, 5, 5), np.float32)
    refinements = np.zeros((2, 5, 5), np.float32)
    heatmaps[0, 2, 2], refinements[:, 2, 2] = 1.0, (0.2, 0.0)     # the peak votes for x = 2.2
    heatmaps[0, 2, 3], refinements[:, 2, 3] = 0.5, (-0.6, 0.0)    # its right neighbour for x = 2.4, weight 0.25
    heatmaps[0, 1, 2], refinements[:, 1, 2] = 0.5, (0.0, 0.0)     # the one above votes for itself, 1 cell away: ignored
    peaks = Peaks(np.array([0]), np.array([[2, 2]]), np.array([[2.0, 2.0]], np.float32), np.array([1.0], np.float32))
    assert np.allclose(regress_peaks(heatmaps, refinements, peaks).xy, [[(2.2 + 0.25 * 2.4) / 1.25, 2.0]])


def test_decode_refuses_outputs_of_another_skeleton():
    meta = ModelMeta(input_width=64, input_height=64, skeleton=CHAIN)
    with pytest.raises(ValueError, match="do not fit skeleton"):
        decode(np.zeros((17, 16, 16), np.float32), np.zeros((8, 16, 16), np.float32), None, meta)
