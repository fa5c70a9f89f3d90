"""Images in, people out, in original image coordinates: preprocess -> engine -> decode.

``flip=True`` is the flip test: each letterboxed input also runs mirrored,
the mirrored outputs are mirrored back (:func:`mirror_outputs`) and averaged
with the plain ones before decoding. The network input is mirrored after
the letterbox, not the image before it, so the padding stays where it was
and mirroring back is an exact flip of the map grid: with pixel centres at
integer coordinates (``input_to_map``), input x -> W-1-x is map u -> w-1-u.
"""

from __future__ import annotations

import cv2
import numpy as np

from rtpose.decoder import People, input_to_map, map_to_input
from rtpose.fast_decoder import decode_outputs
from rtpose.engine import Engine
from rtpose.model_meta import UINT8_NHWC_BGR, DecoderConfig, ModelMeta
from rtpose.preprocess import Letterbox, letterbox_transform, preprocess
from rtpose.skeleton import Skeleton


def estimate(engine: Engine, images: list[np.ndarray], config: DecoderConfig | None = None,
             flip: bool = False) -> list[People]:
    """Run one batch of BGR images through ``engine``; one :class:`People` per image.

    ``flip``: average with the mirrored input's outputs (flip test; twice the inference).
    """
    prepared = [preprocess(image, engine.meta) for image in images]
    outputs = infer(engine, np.concatenate([p[0] for p in prepared]), flip)
    return [decode_outputs(tuple(o[i] for o in outputs), engine.meta, config).map_xy(box.to_original)
            for i, (_, box) in enumerate(prepared)]


def infer(engine: Engine, batch: np.ndarray, flip: bool = False) -> tuple[np.ndarray, ...]:
    """The engine's outputs for a batch; with ``flip``, averaged with the mirrored batch's."""
    outputs = engine.infer(batch)
    if flip:
        mirrored = mirror_outputs(engine.infer(mirror_input(batch, engine.meta)), engine.meta)
        outputs = tuple(a if b is None else (a + b) / 2 for a, b in zip(outputs, mirrored))
    return outputs


def estimate_scales(engines: list[Engine], images: list[np.ndarray], config: DecoderConfig | None = None,
                    flip: bool = False) -> list[People]:
    """Multi-scale: the same model at several input sizes (one engine each), outputs averaged, decoded once.

    Each engine's dense outputs are resampled onto the first engine's map
    grid through the two letterboxes (bilinear, ``cv2.remap``), vectors
    (offsets, refinements) rescaled to its map pixels, then all averaged,
    as HigherHRNet averages its heatmaps over scales.
    """
    base = engines[0].meta
    people = []
    for image in images:
        box = letterbox_transform(image.shape[1], image.shape[0], base.input_width, base.input_height)
        total = None
        for engine in engines:
            tensor, box_s = preprocess(image, engine.meta)
            outputs = tuple(o[0] for o in infer(engine, tensor, flip))
            resampled = resample_outputs(outputs, engine.meta, box_s, base, box)
            total = resampled if total is None else tuple(a + b for a, b in zip(total, resampled))
        averaged = tuple(t / len(engines) for t in total)
        people.append(decode_outputs(averaged, base, config).map_xy(box.to_original))
    return people


def resample_outputs(outputs: tuple[np.ndarray, ...], meta: ModelMeta, box: Letterbox, base: ModelMeta,
                     base_box: Letterbox) -> tuple[np.ndarray, ...]:
    """One image's dense outputs ``[C, h, w]`` (model input ``meta``, letterbox ``box``) on ``base``'s map grid."""
    if set(meta.output_names) - {"heatmaps", "offsets", "refinements"}:
        raise ValueError("multi-scale needs dense outputs (heatmaps, offsets, refinements)")
    u, v = np.meshgrid(np.arange(base.map_width, dtype=np.float32), np.arange(base.map_height, dtype=np.float32))
    original = base_box.to_original(map_to_input(np.stack([u, v], axis=-1), base.stride))
    source = input_to_map(box.to_input(original), meta.stride)
    # A vector of n map pixels at this scale is n * ratio map pixels on the base grid.
    ratio = (base_box.scale / base.stride) / (box.scale / meta.stride)
    resampled = []
    for name, value in zip(meta.output_names, outputs):
        planes = cv2.remap(np.ascontiguousarray(value.transpose(1, 2, 0)), source[..., 0], source[..., 1],
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        planes = planes.reshape(base.map_height, base.map_width, -1).transpose(2, 0, 1)
        resampled.append(planes if name == "heatmaps" else planes * np.float32(ratio))
    return tuple(np.ascontiguousarray(p) for p in resampled)


def mirror_input(batch: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """The network input mirrored left-right, in the model's input format."""
    width_axis = 2 if meta.input_format == UINT8_NHWC_BGR else 3
    return np.ascontiguousarray(np.flip(batch, axis=width_axis))


def mirror_outputs(outputs: tuple[np.ndarray, ...], meta: ModelMeta) -> tuple[np.ndarray | None, ...]:
    """Outputs of a mirrored input, mirrored back into the unmirrored image's layout.

    Dense outputs only (``heatmaps``, ``offsets``, ``refinements``, each
    ``[N, C, h, w]``). In a mirror a left keypoint is the right one, so
    heatmap ``k`` comes from channel ``flip_permutation[k]``; refinements
    and offsets are vectors, so their x component also changes sign. The
    guiding offsets are flipped and permuted too, channel pair of limb
    ``a -> b`` from that of ``perm[a] -> perm[b]``: they are what joins
    keypoints into people, so averaging two estimates of them helps as much
    as averaging heatmaps. A skeleton whose limbs are not closed under the
    mirror has no such channel for some limb; then ``None`` stands in for
    the mirrored offsets and :func:`estimate` keeps the plain ones.
    Applying this twice gives the outputs back: the permutations are
    involutions and the sign changes twice.
    """
    named = dict(zip(meta.output_names, outputs))
    unknown = set(named) - {"heatmaps", "offsets", "refinements"}
    if unknown:
        raise ValueError(f"flip test needs dense outputs; this model has {', '.join(sorted(unknown))}")
    skeleton = meta.skeleton
    keypoint_perm = np.asarray(skeleton.flip_permutation)
    mirrored = {}
    for name, value in named.items():
        value = np.flip(value, axis=-1)
        if name == "heatmaps":
            value = value[:, keypoint_perm]
        elif name == "refinements":
            value = _negate_x(_permute_pairs(value, keypoint_perm))
        else:
            limb_perm = limb_flip_permutation(skeleton)
            if limb_perm is None:
                mirrored[name] = None            # no mirror counterpart: the caller keeps the plain offsets
                continue
            value = _negate_x(_permute_pairs(value, np.asarray(limb_perm)))
        mirrored[name] = np.ascontiguousarray(value)
    return tuple(mirrored[name] for name in meta.output_names)


def limb_flip_permutation(skeleton: Skeleton) -> tuple[int, ...] | None:
    """Index map from directed limb ``a -> b`` to ``perm[a] -> perm[b]``; None if the limbs are not mirror-closed."""
    perm = skeleton.flip_permutation
    index = {limb: i for i, limb in enumerate(skeleton.directed_limbs)}
    mapped = [index.get((perm[a], perm[b])) for a, b in skeleton.directed_limbs]
    return None if None in mapped else tuple(mapped)


def _permute_pairs(value: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Channels ``[N, 2P, h, w]`` taken as P (dx, dy) pairs, pair ``i`` from pair ``perm[i]``."""
    n, c, h, w = value.shape
    return value.reshape(n, c // 2, 2, h, w)[:, perm].reshape(n, c, h, w)


def _negate_x(value: np.ndarray) -> np.ndarray:
    value = value.copy()
    value[:, 0::2] *= -1
    return value
