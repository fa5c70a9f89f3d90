"""Where a bottom-up model loses AP: its outputs swapped for ground-truth targets, one kind at a time.

For every image the model's heatmaps, guiding offsets and refinements are
decoded as they are, then with one or two of them replaced by the targets
the trainer encodes from the annotations (``trainer.targets.encode``). The
AP gained by a swap is what perfect outputs of that kind would be worth:

- ``heatmaps``: which keypoints are found, and in which cell;
- ``offsets``: the grouping into people;
- ``refinements``: where in its cell each keypoint lies.

    python benchmarks/ap_oracle.py rtpose/models/default.onnx data/synth_val/annotations.json
"""

from __future__ import annotations

import argparse

import cv2

from rtpose.decoder import decode
from rtpose.engine import open_engine
from rtpose.preprocess import preprocess
from trainer.annotations import load_keypoint_set
from trainer.evaluate import coco_keypoint_eval, load_coco_gt, people_to_coco
from trainer.targets import encode

SWAPS = ((), ("heatmaps",), ("offsets",), ("refinements",), ("heatmaps", "refinements"),
         ("offsets", "refinements"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a bottom-up .onnx or .pt with dense outputs")
    parser.add_argument("annotations", help="a COCO-format keypoint file")
    args = parser.parse_args()
    engine = open_engine(args.model, threads=2)
    meta = engine.meta
    if tuple(meta.output_names) != ("heatmaps", "offsets", "refinements"):
        raise SystemExit(f"error: {args.model} does not give dense heatmaps, offsets and refinements")
    kset = load_keypoint_set(args.annotations)
    results: dict[tuple, list[dict]] = {swap: [] for swap in SWAPS}
    for record in kset.images:
        tensor, box = preprocess(cv2.imread(str(record.path)), meta)
        model = {name: o[0] for name, o in zip(meta.output_names, engine.infer(tensor))}
        keypoints = record.keypoints.copy()
        keypoints[..., :2] = box.to_input(keypoints[..., :2])
        targets = encode(keypoints, record.areas * box.scale ** 2, meta)
        for swap in SWAPS:
            outputs = {name: getattr(targets, name) if name in swap else value for name, value in model.items()}
            people = decode(outputs["heatmaps"], outputs["offsets"], outputs["refinements"], meta)
            results[swap].extend(people_to_coco(record.image_id, people.map_xy(box.to_original)))
    gt = load_coco_gt(kset)
    print(f"{'ground truth for':28s} {'AP':>6s} {'AP50':>6s} {'AP75':>6s} {'medium':>7s} {'large':>6s}")
    for swap, found in results.items():
        stats, _ = coco_keypoint_eval(gt, found, kset.skeleton)
        print(f"{' + '.join(swap) or '(model as is)':28s} {stats['AP']:6.3f} {stats['AP50']:6.3f} "
              f"{stats['AP75']:6.3f} {stats['AP_medium']:7.3f} {stats['AP_large']:6.3f}")


if __name__ == "__main__":
    main()
