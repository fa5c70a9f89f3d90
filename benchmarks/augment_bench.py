"""Data-loading throughput of the training set with augmentation: images/s through a DataLoader.

    python benchmarks/augment_bench.py ../shared/data/coco/test_coco.json --images ../shared/data/coco \
        --size 512 512 --workers 0 1 2

Each image is read from disk, jittered, warped, flipped and encoded into
targets, as in training; the few sample images are repeated to make up
``--total`` images, one pass over them per epoch.
"""

from __future__ import annotations

import argparse
import time

import torch

from rtpose.model_meta import ModelMeta
from trainer.annotations import load_keypoint_set
from trainer.data import Augmentation, PoseDataset

AUGMENTATION = Augmentation(flip_prob=0.5, scale=(0.75, 1.25), rotation=30, translation=0.1, colour=0.2)


def images_per_second(dataset: PoseDataset, workers: int, total: int, batch_size: int) -> float:
    # A fresh loader per epoch (as training has, persistent_workers=False), so
    # worker start-up is in the figure.
    done, started = 0, time.perf_counter()
    epoch = 0
    while done < total:
        dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
        for batch in loader:
            done += len(batch["image"])
        epoch += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations")
    parser.add_argument("--images", default=None)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--total", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    kset = load_keypoint_set(args.annotations, args.images)
    # Many copies of the few samples, so one DataLoader pass is a real epoch.
    kset.images = kset.images * max(1, args.total // (4 * len(kset.images)))
    meta = ModelMeta(input_width=args.size[0], input_height=args.size[1], skeleton=kset.skeleton)
    for augmented in (False, True):
        dataset = PoseDataset(kset, meta, seed=0, augmentation=AUGMENTATION if augmented else Augmentation())
        for workers in args.workers:
            rate = images_per_second(dataset, workers, args.total, args.batch_size)
            print(f"augmentation {'on ' if augmented else 'off'}  workers {workers}: {rate:6.1f} images/s")


if __name__ == "__main__":
    main()
