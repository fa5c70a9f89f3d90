"""Scenes of synthetic people with COCO keypoint annotations, and datasets of them.

People are drawn back to front (farther = feet higher in the image) over a
random background. A per-pixel map of which person is on top decides which
keypoints other people hide, and each figure reports the ones its own body hides.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from rtpose.skeleton import COCO
from rtpose.synthetic.figure import FigureSpec, RenderedFigure, random_appearance, random_pose, render_figure

MIN_VISIBLE_PIXELS = 20  # a person showing less than this is not annotated
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SceneConfig:
    width: int = 256
    height: int = 256
    min_people: int = 1
    max_people: int = 6
    min_height: float = 40.0  # pixels, standing height
    max_height_frac: float = 0.95  # of the image height
    allow_overlap: bool = True  # False: people's boxes are kept apart (as far as placement allows)
    border_cut_prob: float = 0.15  # share of people placed partly outside the image
    lying_prob: float = 0.03
    busy_background_prob: float = 0.5
    blur_prob: float = 0.3
    max_blur_sigma: float = 1.5
    noise_std: float = 6.0  # the largest; each image draws its own from 0 to this
    brightness_jitter: float = 0.25  # relative change of contrast and brightness

    def __post_init__(self) -> None:
        if not 0 <= self.min_people <= self.max_people:
            raise ValueError(f"need 0 <= min_people <= max_people, got {self.min_people}, {self.max_people}")
        if not 0 < self.min_height <= self.max_height_frac * self.height:
            tallest = self.max_height_frac * self.height
            raise ValueError(f"the shortest person ({self.min_height:g} px) is taller than the tallest "
                             f"({self.max_height_frac:g} of {self.height} px = {tallest:.0f} px)")


@dataclass(frozen=True, eq=False)
class Scene:
    image: np.ndarray  # H x W x 3 uint8 BGR
    persons: list[dict]  # annotated people, in the order of the figures given
    person_map: np.ndarray  # H x W: 1 + index into persons of the person seen there, 0 for none
    figure_index: list[int]  # for each person, the index of its figure in the input


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for image `index` of a dataset: independent of the order images are made in."""
    return np.random.default_rng([seed, index])


# --- backgrounds


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Random blobs: a coarse random grid, upsampled. Values about 0..1, H x W x 3."""
    coarse = rng.integers(0, 256, (cells, max(2, cells * width // height), 3), dtype=np.uint8)
    # Upsampling uint8 is several times faster than float32 and smooth enough.
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return smooth.astype(np.float32) * np.float32(1 / 255)


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _draw_random_shapes(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Rectangles, discs, lines and polygons: clutter, and limb-like distractors."""
    h, w = image.shape[:2]
    size = min(h, w)
    for _ in range(count):
        colour = _random_colour(rng)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        kind = rng.integers(5)
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(5, w // 2)), y + int(rng.integers(5, h // 2))), colour, -1)
        elif kind == 1:
            cv2.circle(image, (x, y), int(rng.integers(3, size // 5)), colour, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(image, (x, y), end, colour, int(rng.integers(1, max(2, size // 25))), cv2.LINE_AA)
        elif kind == 3:
            pts = np.array([(x, y)] * 4) + rng.integers(-size // 4, size // 4, (4, 2))
            cv2.fillPoly(image, [pts.astype(np.int32)], colour, cv2.LINE_AA)
        else:
            axes = (int(rng.integers(3, size // 4)), int(rng.integers(3, size // 6)))
            cv2.ellipse(image, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)


def random_background(rng: np.random.Generator, height: int, width: int, busy_prob: float = 0.5) -> np.ndarray:
    """Plain, gradient, blotchy, striped or cluttered: H x W x 3 uint8."""
    corners = rng.uniform(0, 255, (2, 2, 3)).astype(np.float32)
    if rng.random() < 0.5:  # a nearly plain wall
        corners = corners[:1, :1] + rng.uniform(-25, 25, (2, 2, 3)).astype(np.float32)
    image = cv2.resize(corners, (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        amplitude = rng.uniform(10, 70)
        image += amplitude * (_smooth_noise(rng, height, width, int(rng.choice([3, 6, 12, 24]))) - 0.5)
    if rng.random() < 0.2:  # floor tiles or stripes
        yy, xx = np.indices((height, width))
        period = int(rng.integers(6, 40))
        pattern = (xx // period + yy // period) % 2 if rng.random() < 0.5 else (xx // period) % 2
        image += rng.uniform(10, 50) * (pattern[..., None].astype(np.float32) - 0.5)
    if rng.random() < 0.15:  # fine grain
        image += rng.uniform(5, 25) * (_smooth_noise(rng, height, width, max(4, height // 3)) - 0.5)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < busy_prob:
        _draw_random_shapes(rng, image, int(rng.integers(3, 30)))
    return image


def photometric_jitter(rng: np.random.Generator, image: np.ndarray, config: SceneConfig) -> np.ndarray:
    """Camera effects over the whole scene: contrast and brightness, blur, sensor noise."""
    j = config.brightness_jitter
    alpha, beta = rng.uniform(1 - j, 1 + j), rng.uniform(-100 * j, 100 * j)
    image = cv2.convertScaleAbs(image, alpha=alpha, beta=beta)
    if rng.random() < config.blur_prob:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, config.max_blur_sigma))
    sigma = rng.uniform(0, config.noise_std)
    if sigma > 0.5:
        # Uniform noise of the same spread: its exact shape matters little here,
        # and it is five times cheaper to draw than Gaussian noise.
        spread = np.float32(sigma * math.sqrt(12))
        noisy = rng.random(image.shape, dtype=np.float32)
        cv2.scaleAdd(noisy, float(spread), image.astype(np.float32) - spread / 2, dst=noisy)
        image = np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
    return image


# --- placing people


def random_yaw(rng: np.random.Generator) -> float:
    """Mostly front, back and profile views, with some three-quarter views."""
    yaws = (0, 180, 90, -90, 45, -45, 135, -135)
    weights = (0.25, 0.12, 0.15, 0.15, 0.09, 0.09, 0.075, 0.075)
    return float(yaws[rng.choice(len(yaws), p=weights)] + rng.normal(0, 12))


def _ground_point(rng: np.random.Generator, height: float, config: SceneConfig) -> tuple[float, float]:
    """Where a figure of this height stands: inside the image, or cut by one border."""
    w, h = config.width, config.height
    x = rng.uniform(0.05 * w, 0.95 * w)
    y = rng.uniform(min(height + 1, h - 1), h - 1)
    if rng.random() < config.border_cut_prob:
        side = rng.integers(4)
        if side == 0:
            x = rng.uniform(-0.15 * height, 0.08 * height)
        elif side == 1:
            x = w - rng.uniform(-0.15 * height, 0.08 * height)
        elif side == 2:  # head and shoulders above the top
            y = rng.uniform(0.3 * height, 0.8 * height)
        else:  # legs below the bottom
            y = h + rng.uniform(0.1 * height, 0.5 * height)
    return float(x), float(y)


def random_figure_spec(rng: np.random.Generator, config: SceneConfig, max_height: float) -> FigureSpec:
    # Log-uniform heights: as many small people as large ones, relative to size.
    height = math.exp(rng.uniform(math.log(config.min_height), math.log(max(config.min_height, max_height))))
    roll = rng.normal(0, 4)
    if rng.random() < config.lying_prob:
        roll = rng.choice([-1, 1]) * rng.uniform(70, 95)
    return FigureSpec(position=_ground_point(rng, height, config), height=height, yaw=random_yaw(rng),
                      roll=float(roll), pose=random_pose(rng), appearance=random_appearance(rng))


def _boxes_overlap(a: RenderedFigure, b: RenderedFigure) -> bool:
    (ax, ay), (bx, by) = a.origin, b.origin
    (ah, aw), (bh, bw) = a.mask.shape, b.mask.shape
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def random_figures(rng: np.random.Generator, config: SceneConfig, count: int,
                   existing: Sequence[RenderedFigure] = ()) -> list[RenderedFigure]:
    # Crowds get smaller people, else a few large ones would hide everyone.
    crowd = max(count + len(existing), 1)
    max_height = min(config.max_height_frac * config.height, 2.2 * config.height / math.sqrt(crowd))
    figures = []
    for _ in range(count):
        for _attempt in range(1 if config.allow_overlap else 20):
            figure = render_figure(random_figure_spec(rng, config, max_height))
            if config.allow_overlap or not any(_boxes_overlap(figure, f) for f in (*existing, *figures)):
                figures.append(figure)
                break
    return figures


# --- composing and annotating


def _clip_window(figure: RenderedFigure, width: int, height: int):
    """Slices of the image and of the figure canvas where they overlap, or None."""
    (x0, y0), (h, w) = figure.origin, figure.mask.shape
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    return ((slice(iy0, iy1), slice(ix0, ix1)),
            (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0)))


def keypoint_visibility(keypoints: np.ndarray, self_hidden: np.ndarray, on_top: np.ndarray, rank: int) -> np.ndarray:
    """COCO [x, y, v] rows: v=0 (and x=y=0) outside the image, 1 hidden, 2 visible.

    A keypoint is hidden by another person if the pixel under it shows a person
    drawn later (nearer) than this one, whose rank in the painting order is `rank`.
    """
    h, w = on_top.shape
    x, y = keypoints[:, 0], keypoints[:, 1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    xi = np.clip(np.rint(x).astype(int), 0, w - 1)
    yi = np.clip(np.rint(y).astype(int), 0, h - 1)
    hidden = (on_top[yi, xi] > rank) | self_hidden
    v = np.where(inside, np.where(hidden, 1, 2), 0)
    xy = np.where(inside[:, None], keypoints, 0.0)
    return np.column_stack([xy, v]).astype(np.float64)


def compose_scene(background: np.ndarray, figures: Sequence[RenderedFigure]) -> Scene:
    """Paint figures far to near over the background and annotate those that show."""
    image = background.copy()
    h, w = image.shape[:2]
    on_top = np.zeros((h, w), np.uint16)  # 1 + painting rank of the person seen at each pixel
    order = sorted(range(len(figures)), key=lambda i: (figures[i].ground_y, figures[i].height))
    rank = {i: r for r, i in enumerate(order, 1)}
    windows = {i: _clip_window(f, w, h) for i, f in enumerate(figures)}
    for i in order:
        if windows[i] is not None:
            dst, src = windows[i]
            mask = figures[i].mask[src]
            np.copyto(image[dst], figures[i].image[src], where=mask[..., None])
            np.copyto(on_top[dst], rank[i], where=mask)

    persons, figure_index = [], []
    rank_to_person = np.zeros(len(figures) + 1, np.uint16)
    for i, figure in enumerate(figures):
        if windows[i] is None:
            continue
        dst, src = windows[i]
        if np.count_nonzero(on_top[dst] == rank[i]) < MIN_VISIBLE_PIXELS:
            continue
        keypoints = keypoint_visibility(figure.keypoints, figure.self_hidden, on_top, rank[i])
        if not keypoints[:, 2].any():
            continue
        own = figure.mask[src]
        rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
        x0, y0 = dst[1].start + cols[0], dst[0].start + rows[0]
        persons.append({
            "keypoints": keypoints,
            "bbox": [float(x0), float(y0), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)],
            "area": float(np.count_nonzero(own)),
            "num_keypoints": int(np.count_nonzero(keypoints[:, 2])),
        })
        figure_index.append(i)
        rank_to_person[rank[i]] = len(persons)
    return Scene(image, persons, rank_to_person[on_top], figure_index)


def draw_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> Scene:
    """A random scene, with the map of who is seen where (for checks and tests)."""
    background = random_background(rng, config.height, config.width, config.busy_background_prob)
    count = int(rng.integers(config.min_people, config.max_people + 1))
    figures = random_figures(rng, config, count)
    scene = compose_scene(background, figures)
    # In crowds some people end up hidden; add people until min_people show.
    for _ in range(5):
        missing = config.min_people - len(scene.persons)
        if missing <= 0:
            break
        figures += random_figures(rng, config, missing, figures)
        scene = compose_scene(background, figures)
    image = photometric_jitter(rng, scene.image, config)
    return Scene(image, scene.persons, scene.person_map, scene.figure_index)


def render_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> tuple[np.ndarray, list[dict]]:
    """A random scene: BGR image and its annotated persons (keypoints, bbox, area, num_keypoints)."""
    scene = draw_scene(rng, config)
    return scene.image, scene.persons


# --- COCO files


def coco_categories() -> list[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO.keypoints),
             "skeleton": [[a + 1, b + 1] for a, b in COCO.bones]}]


def coco_annotation(person: dict, annotation_id: int, image_id: int) -> dict:
    """One COCO keypoint annotation; floats rounded to 2 decimals, the box as its polygon."""
    x, y, w, h = (round(float(v), 2) for v in person["bbox"])
    keypoints = []
    for px, py, v in person["keypoints"]:
        keypoints += [round(float(px), 2), round(float(py), 2), int(v)]
    annotation = {
        "id": annotation_id, "image_id": image_id, "category_id": 1,
        "keypoints": keypoints, "num_keypoints": int(person["num_keypoints"]),
        "bbox": [x, y, w, h], "area": round(float(person["area"]), 2), "iscrowd": 0,
        # Tools that build masks need a polygon; the box is the honest one we have.
        "segmentation": [[x, y, round(x + w, 2), y, round(x + w, 2), round(y + h, 2), x, round(y + h, 2)]],
    }
    if "track_id" in person:
        annotation["track_id"] = int(person["track_id"])
    return annotation


def write_dataset(out_dir: str | Path, num_images: int, seed: int, config: SceneConfig = SceneConfig(),
                  progress: Progress | None = None) -> Path:
    """Write out_dir/images/NNNNNN.jpg and out_dir/annotations.json (COCO keypoints); return the json path."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image, persons = render_scene(image_rng(seed, index), config)
        file_name = f"{index:06d}.jpg"
        if not cv2.imwrite(str(out_dir / "images" / file_name), image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise RuntimeError(f"could not write {out_dir / 'images' / file_name}")
        images.append({"id": index + 1, "file_name": file_name, "width": config.width, "height": config.height})
        for person in persons:
            annotations.append(coco_annotation(person, len(annotations) + 1, index + 1))
        if progress is not None:
            progress(index + 1, num_images)
    path = out_dir / "annotations.json"
    info = {"description": "rtpose synthetic people", "seed": seed, "config": asdict(config)}
    path.write_text(json.dumps({"info": info, "images": images, "annotations": annotations,
                                "categories": coco_categories()}))
    return path
