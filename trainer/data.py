"""Training samples: image + targets, as tensors (torch Dataset over a KeypointSet).

Augmentation (all off by default except what the config turns on): random
scale, rotation and translation are folded with the letterbox into one affine
transform, applied to the image with ``cv2.warpAffine`` and to the keypoints
and crowd boxes with the same matrix; then an optional horizontal flip swaps
left and right keypoints; colour jitter changes brightness, contrast and
saturation of the photo before it is warped, so the padding stays padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from rtpose.decoder import input_to_map
from rtpose.model_meta import ModelMeta
from rtpose.preprocess import letterbox, letterbox_transform
from rtpose.topdown import apply_affine, warp_crop
from trainer.annotations import DatasetError, KeypointSet
from trainer.targets import MIN_SIGMA, encode


@dataclass(frozen=True)
class Augmentation:
    flip_prob: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)   # person size factor, drawn log-uniformly in this range
    rotation: float = 0.0                     # degrees, drawn uniformly in [-rotation, rotation]
    translation: float = 0.0                  # fraction of the input size, uniformly in [-t, t]
    colour: float = 0.0                       # brightness/contrast/saturation factors in [1-c, 1+c]

    @property
    def geometric(self) -> bool:
        return self.scale != (1.0, 1.0) or self.rotation > 0 or self.translation > 0


@dataclass(frozen=True)
class AugmentedSample:
    """One sample before target encoding; ``matrix`` maps original pixels to input pixels (before the flip)."""

    image: np.ndarray          # [H, W, 3] BGR network input
    keypoints: np.ndarray      # [N, K, 3] input pixels, visibility 0 where not labelled or pushed outside
    areas: np.ndarray          # [N] input pixels squared
    ignore: np.ndarray | None  # [h, w] map-sized heatmap-loss mask, or None
    matrix: np.ndarray         # [2, 3]
    flipped: bool


class PoseDataset(torch.utils.data.Dataset):
    def __init__(self, kset: KeypointSet, meta: ModelMeta, flip_prob: float = 0.0, seed: int = 0,
                 augmentation: Augmentation | None = None, min_sigma: float = MIN_SIGMA) -> None:
        self.kset, self.meta, self.seed, self.min_sigma = kset, meta, seed, min_sigma
        self.augmentation = augmentation or Augmentation(flip_prob=flip_prob)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.kset.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.sample(index)
        targets = encode(sample.keypoints, sample.areas, self.meta, sample.ignore, self.min_sigma)
        return {
            "image": torch.from_numpy(sample.image),    # uint8 BGR; see network_batch
            "heatmaps": torch.from_numpy(targets.heatmaps),
            "heatmap_mask": torch.from_numpy(targets.heatmap_mask),
            "offsets": torch.from_numpy(targets.offsets),
            "offset_mask": torch.from_numpy(targets.offset_mask),
            "refinements": torch.from_numpy(targets.refinements),
            "refinement_mask": torch.from_numpy(targets.refinement_mask),
        }

    def sample(self, index: int) -> AugmentedSample:
        record = self.kset.images[index]
        aug = self.augmentation
        # One generator per (seed, epoch, sample): the same run gives the same
        # augmentation whatever the number of data-loading workers.
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image {record.path}")
        if aug.colour > 0:
            image = _colour_jitter(image, rng, aug.colour)
        box = letterbox_transform(image.shape[1], image.shape[0], self.meta.input_width, self.meta.input_height)
        matrix = np.array([[box.scale, 0, box.pad_x], [0, box.scale, box.pad_y]], dtype=np.float64)
        if aug.geometric:
            matrix = self._random_affine(rng) @ np.vstack([matrix, [0, 0, 1]])
            canvas = _warp(image, matrix, self.meta.input_width, self.meta.input_height)
        else:
            # Without geometric augmentation, exactly the runtime's letterbox.
            canvas, _ = letterbox(image, self.meta.input_width, self.meta.input_height)
        keypoints = record.keypoints.copy()
        keypoints[..., :2] = apply_affine(matrix, keypoints[..., :2])
        keypoints = self._outside_unlabelled(keypoints)
        # Rotation keeps areas; only the scale changes them.
        areas = record.areas * abs(np.linalg.det(matrix[:, :2]))
        ignore = self._ignore_mask(_boxes_through(matrix, record.ignore_boxes))
        flipped = bool(rng.random() < aug.flip_prob)
        if flipped:
            canvas, keypoints, ignore = self._flipped(canvas, keypoints, ignore)
        return AugmentedSample(canvas, keypoints, areas.astype(np.float32), ignore, matrix, flipped)

    def _random_affine(self, rng: np.random.Generator) -> np.ndarray:
        """Scale and rotate about the input's centre, then shift: [2, 3]."""
        aug, w, h = self.augmentation, self.meta.input_width, self.meta.input_height
        lo, hi = aug.scale
        # Log-uniform, so halving and doubling are equally likely.
        s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        angle = float(rng.uniform(-aug.rotation, aug.rotation))
        shift = rng.uniform(-aug.translation, aug.translation, size=2) * (w, h)
        centre = ((w - 1) / 2, (h - 1) / 2)
        matrix = cv2.getRotationMatrix2D(centre, angle, s)
        matrix[:, 2] += shift
        return matrix

    def _outside_unlabelled(self, keypoints: np.ndarray) -> np.ndarray:
        # A keypoint pushed out of the input has no place in the maps: unlabel
        # it the COCO way, (0, 0, 0).
        x, y = keypoints[..., 0], keypoints[..., 1]
        outside = (x < 0) | (y < 0) | (x > self.meta.input_width - 1) | (y > self.meta.input_height - 1)
        keypoints[outside & (keypoints[..., 2] > 0)] = 0.0
        keypoints[keypoints[..., 2] <= 0] = 0.0
        return keypoints

    def _ignore_mask(self, corners: np.ndarray) -> np.ndarray | None:
        """``corners`` [M, 2, 2]: (x0, y0), (x1, y1) of each ignored box in input pixels."""
        if len(corners) == 0:
            return None
        mask = np.zeros((self.meta.map_height, self.meta.map_width), dtype=bool)
        for (x0, y0), (x1, y1) in input_to_map(corners, self.meta.stride):
            mask[max(int(np.floor(y0)), 0):max(int(np.ceil(y1)) + 1, 0),
                 max(int(np.floor(x0)), 0):max(int(np.ceil(x1)) + 1, 0)] = True
        return mask

    def _flipped(self, image, keypoints, ignore):
        width = image.shape[1]
        keypoints = keypoints[:, list(self.meta.skeleton.flip_permutation)].copy()
        keypoints[..., 0] = np.where(keypoints[..., 2] > 0, width - 1 - keypoints[..., 0], 0.0)
        return image[:, ::-1].copy(), keypoints, (None if ignore is None else ignore[:, ::-1].copy())


def network_batch(images: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """A batch of ``[N, H, W, 3]`` uint8 BGR pixels -> the network's ``[N, 3, H, W]`` float32 RGB input.

    The same numbers as :func:`rtpose.preprocess.normalize`, computed on the
    whole batch in the training process: samples travel as uint8 (a quarter
    of the bytes to collate), and the result is channels-last already, the
    layout training runs in.
    """
    mean = torch.tensor(meta.mean, dtype=torch.float32, device=images.device)
    scale = 1.0 / torch.tensor(meta.std, dtype=torch.float32, device=images.device)
    rgb = images.flip(-1).float()
    return ((rgb - mean) * scale).permute(0, 3, 1, 2)


def _boxes_through(matrix: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The axis-aligned boxes around x, y, w, h boxes carried through ``matrix``: [M, 2, 2]."""
    if len(boxes) == 0:
        return np.zeros((0, 2, 2), np.float32)
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    corners = apply_affine(matrix, np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1),
                                       np.stack([x0, y1], 1), np.stack([x1, y1], 1)], axis=1))
    return np.stack([corners.min(axis=1), corners.max(axis=1)], axis=1)


def _warp(image: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    # Shrinking by more than 2: halve with a Gaussian pyramid first, as the
    # letterbox does, since warpAffine's bilinear sampling does not
    # anti-alias. pyrDown keeps every second pixel, so pixel j of the halved
    # image is pixel 2j of the original.
    matrix = matrix.copy()
    while np.sqrt(abs(np.linalg.det(matrix[:, :2]))) <= 0.5 and min(image.shape[:2]) >= 2:
        image = cv2.pyrDown(image)
        matrix[:, :2] *= 2
    return warp_crop(image, matrix, width, height)


def _colour_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, then contrast about the mean, then saturation about each pixel's grey.

    All three are linear in the pixel, so they fold into one 3x4 colour
    matrix applied by ``cv2.transform`` (saturating to uint8): 2 ms for a
    640x480 photo against 20 ms in float numpy.
    """
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    mean = float(np.mean(cv2.mean(image)[:3]))
    gain = brightness * contrast
    matrix = np.empty((3, 4), np.float64)
    matrix[:, :3] = gain * (saturation * np.eye(3) + (1 - saturation) / 3)
    matrix[:, 3] = brightness * mean * (1 - contrast)
    return cv2.transform(image, matrix)
