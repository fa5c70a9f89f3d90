"""Top-down training samples: one person per sample, cropped as the runtime crops (rtpose/topdown.py).

The crop region comes from the person's box exactly as at run time
(:func:`rtpose.topdown.crop_region`); augmentation scales it, rotates it
about its centre and flips it (left and right swapped), as Simple Baselines
does. Targets are Gaussian heatmaps (sigma 2 cells) centred where each
keypoint falls, in the runtime's convention (crop pixel = stride x cell),
and a weight per keypoint: 1 if labelled and inside the crop, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from rtpose.model_meta import ModelMeta
from rtpose.topdown import apply_affine, crop_matrix, crop_region, warp_crop
from trainer.annotations import DatasetError, KeypointSet
from trainer.data import Augmentation, _colour_jitter

SIGMA = 2.0   # heatmap Gaussian, in cells (the published value at 64x48)


def encode_heatmaps(keypoints: np.ndarray, meta: ModelMeta, sigma: float = SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """``[K, 3]`` crop-pixel keypoints -> ``[K, h, w]`` heatmaps (peak 1) and ``[K]`` weights."""
    h, w = meta.map_height, meta.map_width
    u, v = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)[:, None]
    heatmaps = np.zeros((len(keypoints), h, w), np.float32)
    weights = np.zeros(len(keypoints), np.float32)
    for k, (x, y, vis) in enumerate(keypoints):
        cx, cy = x / meta.stride, y / meta.stride
        if vis <= 0 or not (-0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5):
            continue
        heatmaps[k] = np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sigma ** 2))
        weights[k] = 1.0
    return heatmaps, weights


@dataclass(frozen=True)
class CropSample:
    crop: np.ndarray        # [H, W, 3] BGR, the input size
    keypoints: np.ndarray   # [K, 3] in crop pixels (after the flip), (0, 0, 0) where not labelled
    matrix: np.ndarray      # [2, 3] image pixels -> crop pixels, before the flip
    flipped: bool


class TopDownDataset(torch.utils.data.Dataset):
    """Every labelled person of a :class:`KeypointSet` with a box, as a crop and its targets."""

    def __init__(self, kset: KeypointSet, meta: ModelMeta, seed: int = 0,
                 augmentation: Augmentation | None = None) -> None:
        self.kset, self.meta, self.seed = kset, meta, seed
        self.augmentation = augmentation or Augmentation()
        self.epoch = 0
        self.people = [(i, j) for i, record in enumerate(kset.images) for j, box in enumerate(record.boxes)
                       if box[2] > 1 and box[3] > 1 and (record.keypoints[j, :, 2] > 0).any()]

    def __len__(self) -> int:
        return len(self.people)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.sample(index)
        heatmaps, weights = encode_heatmaps(sample.keypoints, self.meta)
        return {"image": torch.from_numpy(sample.crop),     # uint8 BGR; see trainer.data.network_batch
                "heatmaps": torch.from_numpy(heatmaps), "weights": torch.from_numpy(weights)}

    def sample(self, index: int) -> CropSample:
        image_index, person = self.people[index]
        record = self.kset.images[image_index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        aug, w, h = self.augmentation, self.meta.input_width, self.meta.input_height
        image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image {record.path}")
        if aug.colour > 0:
            image = _colour_jitter(image, rng, aug.colour)
        centre, size = crop_region(record.boxes[person], w / h)
        lo, hi = aug.scale
        size = size * float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        centre = centre + rng.uniform(-aug.translation, aug.translation, size=2) * size
        rotation = float(rng.uniform(-aug.rotation, aug.rotation))
        matrix = crop_matrix(centre, size, w, h, rotation)
        crop = warp_crop(image, matrix, w, h)
        keypoints = record.keypoints[person].copy()
        keypoints[:, :2] = apply_affine(matrix, keypoints[:, :2])
        flipped = bool(rng.random() < aug.flip_prob)
        if flipped:
            crop = crop[:, ::-1].copy()
            keypoints = keypoints[list(self.meta.skeleton.flip_permutation)]
            # Crop pixel x mirrors to w - 1 - x; the heatmaps then mirror cell u to
            # (w - 1)/stride - u, which the runtime's flip test shifts back.
            keypoints[:, 0] = w - 1 - keypoints[:, 0]
        keypoints[keypoints[:, 2] <= 0] = 0.0
        return CropSample(crop, keypoints, matrix, flipped)
