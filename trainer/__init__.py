"""Training side of rtpose (torch): model, targets, losses, datasets, loop, COCO evaluation."""
