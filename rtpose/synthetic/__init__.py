"""Synthetic people in COCO keypoint format: images, datasets and videos.

For training and evaluating the pose model without real data, for demo videos,
and for pipeline and tracking tests. Everything is deterministic by seed and
uses only numpy and OpenCV.
"""

from rtpose.synthetic.figure import (Appearance, FigureSpec, Pose, RenderedFigure, clamp_pose, random_appearance,
                                     random_pose, render_figure, walking_pose, waving_pose)
from rtpose.synthetic.scene import (Scene, SceneConfig, compose_scene, draw_scene, image_rng, random_background,
                                    render_scene, write_dataset)
from rtpose.synthetic.video import iter_video_frames, write_video

__all__ = [
    "Appearance", "FigureSpec", "Pose", "RenderedFigure", "clamp_pose", "random_appearance", "random_pose",
    "render_figure", "walking_pose", "waving_pose",
    "Scene", "SceneConfig", "compose_scene", "draw_scene", "image_rng", "random_background", "render_scene",
    "write_dataset", "iter_video_frames", "write_video",
]
