"""SimplePose's losses: focal L2 on heatmaps, masked L1 on guiding offsets (and on refinements);
Simple Baselines' weighted MSE on top-down heatmaps."""

from __future__ import annotations

import torch


def focal_l2_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  alpha: float = 0.1, beta: float = 0.02, gamma: float = 2.0) -> torch.Tensor:
    """L2 weighted down where the prediction is already good (SimplePose's focal L2).

    ``st`` is how close the prediction is to its goal, ``pred`` for keypoint
    regions and ``1 - pred`` for background, shifted by ``alpha``/``beta`` so
    that nearly right pixels still count a little. ``mask`` is ``[N, h, w]``.
    Summed over pixels, averaged over images and keypoint types.
    """
    st = torch.where(target >= 0.01, pred - alpha, 1 - pred - beta)
    factor = torch.abs(1.0 - st) ** gamma
    loss = (pred - target) ** 2 * factor * mask[:, None]
    return loss.sum() / (pred.shape[0] * pred.shape[1])   # per image and keypoint map


def offset_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 over supervised positions; ``mask`` is ``[N, D, h, w]`` for ``2D`` vector channels.

    Used for the guiding offsets and for the keypoint refinements alike.
    """
    mask2 = mask.repeat_interleave(2, dim=1)
    return (torch.abs(pred - target) * mask2).sum() / mask2.sum().clamp(min=1.0)


def joints_mse_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Simple Baselines' JointsMSELoss: half the mean squared error of ``[N, K, h, w]`` heatmaps,
    each keypoint's map weighted by ``weights [N, K]`` (0 where the keypoint is not labelled)."""
    w = weights[:, :, None, None]
    return 0.5 * ((pred - target) * w).pow(2).mean()
