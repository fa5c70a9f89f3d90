"""Short videos of synthetic people walking, crossing, turning and waving,
with per-frame COCO keypoints and stable track ids.

Each person follows a script (an `Actor`) that gives its figure as a smooth
function of time, so motion is continuous and identities never swap.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from rtpose.synthetic.figure import (Appearance, FigureSpec, Pose, random_appearance, render_figure,
                                     standing_pose, walking_pose, waving_pose)
from rtpose.synthetic.scene import Progress, coco_annotation, coco_categories, compose_scene, random_background

HORIZON = 0.3  # of the image height: people standing lower are nearer and taller


@dataclass(frozen=True)
class Actor:
    track_id: int
    appearance: Appearance
    start: tuple[float, float]  # ground point at frame 0
    velocity: tuple[float, float]  # pixels per frame
    size: float  # height in pixels per pixel of ground below the horizon (perspective)
    yaw: float  # degrees at frame 0
    turn_rate: float = 0.0  # degrees per frame
    stride: float = 0.0  # 0 stands still
    gait_rate: float = 0.0  # radians of the walking cycle per frame
    wave_rate: float = 0.0  # radians of the waving cycle per frame, 0 for no waving
    wave_side: int = 1
    rest_pose: Pose = Pose()


def actor_figure(actor: Actor, frame: int, horizon_y: float) -> FigureSpec:
    """Where the actor is and what it does at a frame."""
    x = actor.start[0] + actor.velocity[0] * frame
    y = actor.start[1] + actor.velocity[1] * frame
    pose = actor.rest_pose
    if actor.stride > 0:
        pose = walking_pose(actor.gait_rate * frame, actor.stride)
    else:  # idle arm sway, so standing people are not frozen
        sway = 4.0 * math.sin(0.15 * frame + actor.track_id)
        pose = replace(pose, shoulder_flex=(pose.shoulder_flex[0] + sway, pose.shoulder_flex[1] - sway))
    if actor.wave_rate > 0:
        pose = waving_pose(actor.wave_rate * frame, actor.wave_side, pose)
    return FigureSpec(position=(x, y), height=actor.size * (y - horizon_y), yaw=actor.yaw + actor.turn_rate * frame,
                      pose=pose, appearance=actor.appearance)


def _walker(rng, track_id, num_frames, width, height, ground_frac, rightward) -> Actor:
    ground_y = ground_frac * height
    size = rng.uniform(1.15, 1.4)
    body = size * (ground_y - HORIZON * height)
    distance = rng.uniform(0.6, 0.8) * width
    start_x = rng.uniform(0.05, 0.15) * width if rightward else rng.uniform(0.85, 0.95) * width
    speed = distance / num_frames * (1 if rightward else -1)
    stride = rng.uniform(0.7, 1.0)
    # One gait cycle covers two steps of about 0.41 body heights each at full stride.
    gait_rate = 2 * math.pi * abs(speed) / (0.83 * body * stride)
    yaw = (90.0 if rightward else -90.0) + rng.uniform(-30, 30)
    drift = rng.uniform(-0.1, 0.1) * height / num_frames
    return Actor(track_id, random_appearance(rng), (start_x, ground_y), (speed, drift), size, yaw,
                 stride=stride, gait_rate=gait_rate)


def plan_actors(rng: np.random.Generator, num_people: int, num_frames: int, width: int, height: int,
                fps: float) -> list[Actor]:
    """Two walkers crossing at different depths, one turning on the spot, one waving, then more walkers.

    With three people the one turning also waves.
    """
    actors = []
    for index in range(num_people):
        track_id = index + 1
        if index == 0:
            actors.append(_walker(rng, track_id, num_frames, width, height, rng.uniform(0.86, 0.96), True))
        elif index == 1:
            actors.append(_walker(rng, track_id, num_frames, width, height, rng.uniform(0.62, 0.74), False))
        elif index in (2, 3):
            turns = index == 2
            waves = index == 3 or num_people == 3
            actors.append(Actor(
                track_id, random_appearance(rng),
                start=(rng.uniform(0.2, 0.8) * width, rng.uniform(0.7, 0.9) * height), velocity=(0.0, 0.0),
                size=rng.uniform(1.15, 1.4),
                yaw=rng.uniform(-20, 20) if turns else rng.uniform(-35, 35),
                # Nearly a full turn over the video: front, profile, back, other profile.
                turn_rate=rng.choice([-1, 1]) * rng.uniform(250, 330) / num_frames if turns else 0.0,
                wave_rate=2 * math.pi * rng.uniform(1.0, 2.0) / fps if waves else 0.0,
                wave_side=int(rng.integers(2)), rest_pose=standing_pose(rng)))
        else:
            actors.append(_walker(rng, track_id, num_frames, width, height, rng.uniform(0.55, 0.98),
                                  bool(rng.integers(2))))
    return actors


def iter_video_frames(seed: int, num_frames: int = 90, width: int = 640, height: int = 360, fps: float = 15,
                      num_people: int = 3) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """Frames (BGR uint8) and their persons (as `render_scene`'s, plus `track_id`), in order."""
    rng = np.random.default_rng([seed, 0])
    background = random_background(rng, height, width)
    actors = plan_actors(rng, num_people, num_frames, width, height, fps)
    for frame in range(num_frames):
        figures = [render_figure(actor_figure(a, frame, HORIZON * height)) for a in actors]
        scene = compose_scene(background, figures)
        persons = [{**person, "track_id": actors[i].track_id} for person, i in zip(scene.persons, scene.figure_index)]
        # Light sensor noise, fresh each frame, seeded by frame so any frame can be remade alone.
        noise = np.random.default_rng([seed, 1, frame]).standard_normal(scene.image.shape, dtype=np.float32)
        image = np.clip(scene.image + 2.0 * noise, 0, 255).astype(np.uint8)
        yield image, persons


def write_video_dataset(out_dir: str | Path, num_videos: int, seed: int, num_frames: int = 90, frame_step: int = 3,
                        sizes: tuple[tuple[int, int], ...] = ((640, 360), (640, 480)), fps: float = 15,
                        people: tuple[int, int] = (2, 6), progress: Progress | None = None) -> Path:
    """Every ``frame_step``-th frame of ``num_videos`` videos as a COCO-format image dataset.

    Moving people (walking, turning, waving) seen as a camera sees them, for
    training beside the still scenes of :func:`write_dataset`. Video ``v``
    uses seed ``(seed, v)``; returns the json path.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for v in range(num_videos):
        rng = np.random.default_rng([seed, v])
        width, height = sizes[int(rng.integers(len(sizes)))]
        count = int(rng.integers(people[0], people[1] + 1))
        frames = iter_video_frames(int(rng.integers(2**31)), num_frames, width, height, fps, count)
        for frame, (image, persons) in enumerate(frames):
            if frame % frame_step:
                continue
            image_id = len(images) + 1
            name = f"{v:04d}_{frame:04d}.jpg"
            cv2.imwrite(str(out_dir / "images" / name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            images.append({"id": image_id, "file_name": name, "width": width, "height": height,
                           "video": v, "frame_index": frame})
            annotations += [coco_annotation(p, len(annotations) + 1, image_id) for p in persons]
        if progress is not None:
            progress(v + 1, num_videos)
    info = {"description": "rtpose synthetic video frames", "seed": seed, "videos": num_videos,
            "frame_step": frame_step}
    path = out_dir / "annotations.json"
    path.write_text(json.dumps({"info": info, "images": images, "annotations": annotations,
                                "categories": coco_categories()}))
    return path


def write_video(out_path: str | Path, seed: int, num_frames: int = 90, width: int = 640, height: int = 360,
                fps: float = 15, num_people: int = 3, progress: Progress | None = None) -> Path:
    """Write an mp4 and, beside it (.json), its COCO keypoint ground truth with track ids."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {out_path} with the mp4v codec")
    images, annotations = [], []
    try:
        frames = iter_video_frames(seed, num_frames, width, height, fps, num_people)
        for frame, (image, persons) in enumerate(frames):
            writer.write(image)
            images.append({"id": frame + 1, "file_name": f"frame_{frame:06d}.jpg", "width": width,
                           "height": height, "frame_index": frame})
            for person in persons:
                annotations.append(coco_annotation(person, len(annotations) + 1, frame + 1))
            if progress is not None:
                progress(frame + 1, num_frames)
    finally:
        writer.release()
    info = {"description": "rtpose synthetic video", "seed": seed, "video": out_path.name, "fps": fps,
            "num_frames": num_frames, "num_people": num_people}
    out_path.with_suffix(".json").write_text(json.dumps(
        {"info": info, "images": images, "annotations": annotations, "categories": coco_categories()}))
    return out_path
