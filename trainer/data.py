"""Training samples: image + targets, as tensors (torch Dataset over a KeypointSet)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from rtpose.decoder import input_to_map
from rtpose.model_meta import ModelMeta
from rtpose.preprocess import letterbox, normalize
from trainer.annotations import DatasetError, ImageRecord, KeypointSet
from trainer.targets import encode


class PoseDataset(torch.utils.data.Dataset):
    def __init__(self, kset: KeypointSet, meta: ModelMeta, flip_prob: float = 0.0, seed: int = 0) -> None:
        self.kset, self.meta, self.flip_prob, self.seed = kset, meta, flip_prob, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.kset.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.kset.images[index]
        # One generator per (seed, epoch, sample): the same run gives the same
        # augmentation whatever the number of data-loading workers.
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image, keypoints, areas, ignore = self._letterboxed(record)
        if rng.random() < self.flip_prob:
            image, keypoints, ignore = self._flipped(image, keypoints, ignore)
        targets = encode(keypoints, areas, self.meta, ignore)
        return {
            "image": torch.from_numpy(normalize(image, self.meta)[0]),
            "heatmaps": torch.from_numpy(targets.heatmaps),
            "heatmap_mask": torch.from_numpy(targets.heatmap_mask),
            "offsets": torch.from_numpy(targets.offsets),
            "offset_mask": torch.from_numpy(targets.offset_mask),
            "refinements": torch.from_numpy(targets.refinements),
            "refinement_mask": torch.from_numpy(targets.refinement_mask),
        }

    def _letterboxed(self, record: ImageRecord):
        image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image {record.path}")
        canvas, box = letterbox(image, self.meta.input_width, self.meta.input_height)
        keypoints = record.keypoints.copy()
        keypoints[..., :2] = box.to_input(keypoints[..., :2])
        ignore = self._ignore_mask(record.ignore_boxes, box)
        return canvas, keypoints, record.areas * box.scale ** 2, ignore

    def _ignore_mask(self, boxes: np.ndarray, box) -> np.ndarray | None:
        if len(boxes) == 0:
            return None
        mask = np.zeros((self.meta.map_height, self.meta.map_width), dtype=bool)
        corners = box.to_input(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1).reshape(-1, 2, 2))
        for (x0, y0), (x1, y1) in input_to_map(corners, self.meta.stride):
            mask[max(int(np.floor(y0)), 0):max(int(np.ceil(y1)) + 1, 0),
                 max(int(np.floor(x0)), 0):max(int(np.ceil(x1)) + 1, 0)] = True
        return mask

    def _flipped(self, image, keypoints, ignore):
        width = image.shape[1]
        keypoints = keypoints[:, list(self.meta.skeleton.flip_permutation)].copy()
        keypoints[..., 0] = np.where(keypoints[..., 2] > 0, width - 1 - keypoints[..., 0], 0.0)
        return image[:, ::-1].copy(), keypoints, (None if ignore is None else ignore[:, ::-1].copy())
