"""One synthetic person: a 3-D stick body posed by joint angles, seen from any
yaw, drawn with capsules, quads and ellipses, with its 17 COCO keypoints.

The body is posed in 3-D (body frame: origin between the hip joints, x towards
the person's left, y down, z forward) and projected orthographically. Working
in 3-D rather than drawing 2-D poses directly is what makes profiles and back
views come out right: shoulders narrow as the figure turns, the far arm goes
behind the torso, and which eye or ear is hidden follows from the geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Callable

import cv2
import numpy as np

from rtpose.skeleton import COCO

Colour = tuple[int, int, int]  # BGR
Pair = tuple[float, float]  # (left, right) of the person, not of the image

# Body geometry in units of standing height (anthropometric tables: the head
# is ~1/7.5 of the height, hip joints ~0.53 above the floor, shoulder joints
# ~0.82, segment lengths after Drillis & Contini).
SHOULDER_Y, NECK_Y, HEAD_Y = -0.28, -0.29, -0.403  # relative to the hip joints
SHOULDER_HALF_SPAN, HIP_HALF_SPAN = 0.1, 0.06
UPPER_ARM, FOREARM, HAND = 0.186, 0.146, 0.06
THIGH, SHIN, FOOT = 0.245, 0.245, 0.1
HEAD_RADII = np.array([0.05, 0.0667, 0.06])  # lateral, vertical, front-back
# Capsule radii (at the proximal end, distal end).
LIMB_RADII = {"upper_arm": (0.03, 0.024), "forearm": (0.024, 0.02), "thigh": (0.046, 0.034),
              "shin": (0.034, 0.024), "foot": (0.02, 0.016), "hand": (0.022, 0.022), "neck": (0.026, 0.026)}
# Torso cross-section half-axes (lateral, front-back) at the shoulders, belt and hips.
TORSO_SECTIONS = {"shoulders": (0.125, 0.07), "belt": (0.09, 0.062), "hips": (0.1, 0.066)}

# Face keypoints on the head, as fractions of HEAD_RADII from its centre;
# kept inside the head outline so that a visible one lies on the silhouette.
FACE_OFFSETS = {
    "nose": (0.0, 0.15, 0.8),
    "left_eye": (0.35, -0.05, 0.75), "right_eye": (-0.35, -0.05, 0.75),
    "left_ear": (0.85, 0.05, -0.05), "right_ear": (-0.85, 0.05, -0.05),
}
# A face point is hidden by its own head once its surface normal turns this far
# away from the camera (cosine); ears stay visible a little longer, as they stick out.
FACE_HIDDEN_AFTER = {"nose": 0.05, "left_eye": 0.15, "right_eye": 0.15, "left_ear": 0.45, "right_ear": 0.45}

FACING_YAW = {"front": 0.0, "right_profile": 90.0, "back": 180.0, "left_profile": -90.0}

SIDES = (("left", 1.0, 0), ("right", -1.0, 1))  # name, sign of x in the body frame, Pair index


@dataclass(frozen=True)
class Pose:
    """Joint angles in degrees; a Pair is (left, right) of the person.

    Zero everywhere is standing straight with arms hanging down. Flexion raises
    a limb forward (negative: backward), abduction raises it sideways (180
    is an arm straight up), elbows and knees only bend one way, and the elbow
    twist turns the plane the forearm bends in (+90: bends upward when the arm
    is held out sideways, as in waving).
    """

    shoulder_flex: Pair = (0.0, 0.0)
    shoulder_abduct: Pair = (8.0, 8.0)
    elbow_flex: Pair = (10.0, 10.0)
    elbow_twist: Pair = (0.0, 0.0)
    hip_flex: Pair = (0.0, 0.0)
    hip_abduct: Pair = (3.0, 3.0)
    knee_flex: Pair = (3.0, 3.0)
    torso_lean: float = 0.0  # forward bend at the hips


JOINT_LIMITS = {
    "shoulder_flex": (-50.0, 180.0), "shoulder_abduct": (-10.0, 180.0),
    "elbow_flex": (0.0, 150.0), "elbow_twist": (-60.0, 100.0),
    "hip_flex": (-30.0, 120.0), "hip_abduct": (-10.0, 45.0),
    "knee_flex": (0.0, 150.0), "torso_lean": (-15.0, 60.0),
}


def clamp_pose(pose: Pose) -> Pose:
    """The pose with every angle inside JOINT_LIMITS."""
    def clip(value, lo, hi):
        if isinstance(value, tuple):
            return tuple(float(min(max(v, lo), hi)) for v in value)
        return float(min(max(value, lo), hi))
    return Pose(**{f.name: clip(getattr(pose, f.name), *JOINT_LIMITS[f.name]) for f in fields(Pose)})


@dataclass(frozen=True)
class Appearance:
    skin: Colour = (150, 190, 230)
    hair: Colour = (30, 40, 60)
    shirt: Colour = (180, 80, 40)
    trousers: Colour = (60, 50, 40)
    shoes: Colour = (30, 30, 30)
    long_sleeves: bool = False
    shorts: bool = False
    long_hair: bool = False
    build: float = 1.0  # thickness of limbs and torso, 0.8 (slim) .. 1.3 (broad)


@dataclass(frozen=True)
class FigureSpec:
    position: tuple[float, float]  # image point on the ground under the figure (its lowest point)
    height: float  # standing height in pixels
    yaw: float | str = 0.0  # degrees or a FACING_YAW name; 0 faces the camera, 90 faces image right
    roll: float = 0.0  # image-plane tilt in degrees (clockwise), for leaning or lying people
    pose: Pose = field(default_factory=Pose)
    appearance: Appearance = field(default_factory=Appearance)


@dataclass(frozen=True, eq=False)
class RenderedFigure:
    origin: tuple[int, int]  # image (x, y) of the canvas's top-left pixel
    image: np.ndarray  # canvas, h x w x 3 uint8 (BGR), meaningful where mask
    mask: np.ndarray  # canvas, h x w bool: the silhouette
    keypoints: np.ndarray  # 17 x 2 float image coordinates, COCO order
    self_hidden: np.ndarray  # 17 bool: hidden behind the figure's own head or body
    ground_y: float
    height: float


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _limb_frame(flex_deg: float, abduct_deg: float, side: float) -> np.ndarray:
    """Rotation of a limb hanging straight down: flexion about x, then abduction outward.

    Column 1 is the limb's direction, column 2 its front (where a forearm bends to).
    """
    a = math.radians(abduct_deg)
    ca, sa = math.cos(a), side * math.sin(a)
    abduct = np.array([[ca, sa, 0.0], [-sa, ca, 0.0], [0.0, 0.0, 1.0]])
    return abduct @ _rot_x(math.radians(flex_deg))


def body_points(pose: Pose, height: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """3-D points in pixels in the body frame, and the face points' surface normals.

    Names are the COCO keypoints plus neck, head, hands and toes.
    """
    # The upper body bends forward at the hips; the arms keep their angles to
    # the vertical, as hanging arms hang down whatever the torso does.
    lean = _rot_x(-math.radians(pose.torso_lean))
    pts = {"pelvis": np.zeros(3)}
    pts["neck"] = lean @ np.array([0.0, NECK_Y, 0.0]) * height
    pts["head"] = lean @ np.array([0.0, HEAD_Y, 0.005]) * height
    normals = {}
    for name, offset in FACE_OFFSETS.items():
        local = np.array(offset) * HEAD_RADII
        pts[name] = pts["head"] + lean @ local * height
        normal = lean @ (local / HEAD_RADII ** 2)  # ellipsoid normal
        normals[name] = normal / np.linalg.norm(normal)
    for name, side, i in SIDES:
        shoulder = lean @ np.array([side * SHOULDER_HALF_SPAN, SHOULDER_Y, 0.0]) * height
        frame = _limb_frame(pose.shoulder_flex[i], pose.shoulder_abduct[i], side)
        upper, front = frame[:, 1], frame[:, 2]
        twist = math.radians(pose.elbow_twist[i])
        # Twisting about the upper arm turns the bending direction towards upper x front.
        across = np.array([upper[1] * front[2] - upper[2] * front[1], upper[2] * front[0] - upper[0] * front[2],
                           upper[0] * front[1] - upper[1] * front[0]])
        bend = math.cos(twist) * front + side * math.sin(twist) * across
        elbow = math.radians(pose.elbow_flex[i])
        fore = math.cos(elbow) * upper + math.sin(elbow) * bend
        pts[f"{name}_shoulder"] = shoulder
        pts[f"{name}_elbow"] = shoulder + UPPER_ARM * height * upper
        pts[f"{name}_wrist"] = pts[f"{name}_elbow"] + FOREARM * height * fore
        pts[f"{name}_hand"] = pts[f"{name}_wrist"] + HAND * height * fore

        frame = _limb_frame(pose.hip_flex[i], pose.hip_abduct[i], side)
        thigh, back = frame[:, 1], -frame[:, 2]
        knee = math.radians(pose.knee_flex[i])
        shin = math.cos(knee) * thigh + math.sin(knee) * back
        foot = math.sin(knee) * thigh - math.cos(knee) * back  # square to the shin, forward
        pts[f"{name}_hip"] = np.array([side * HIP_HALF_SPAN, 0.0, 0.0]) * height
        pts[f"{name}_knee"] = pts[f"{name}_hip"] + THIGH * height * thigh
        pts[f"{name}_ankle"] = pts[f"{name}_knee"] + SHIN * height * shin
        pts[f"{name}_toe"] = pts[f"{name}_ankle"] + FOOT * height * (foot + 0.3 * shin)
    return pts, normals


def facing_yaw(yaw: float | str) -> float:
    return FACING_YAW[yaw] if isinstance(yaw, str) else float(yaw)


def project(points: np.ndarray, yaw_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic view of body-frame points (N x 3): image x, y and depth (larger is farther)."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    x = points[:, 0] * c + points[:, 2] * s
    depth = points[:, 0] * s - points[:, 2] * c
    return np.stack([x, points[:, 1]], axis=1), depth


def _depth_of(vector: np.ndarray, yaw_deg: float) -> float:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    return float(vector[0] * s - vector[2] * c)


# --- drawing primitives: each returns draw(canvas, value). Shapes are drawn
# once, into a canvas of shape labels; colours come from a palette lookup.

SHIFT = 4  # sub-pixel bits, so small figures and slow motion stay smooth
_ONE = 1 << SHIFT
Draw = Callable[[np.ndarray, tuple], None]


def _fixed(x: float, y: float) -> tuple[int, int]:
    return round(x * _ONE), round(y * _ONE)


def capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> Draw:
    """A limb: a tapered quad between two end discs."""
    (x0, y0), (x1, y1) = np.asarray(p0).tolist(), np.asarray(p1).tolist()
    length = math.hypot(x1 - x0, y1 - y0)
    ends = (_fixed(x0, y0), round(r0 * _ONE)), (_fixed(x1, y1), round(r1 * _ONE))
    quad = None
    if length > 1e-6:
        nx, ny = (y0 - y1) / length, (x1 - x0) / length
        quad = np.array([_fixed(x0 + r0 * nx, y0 + r0 * ny), _fixed(x1 + r1 * nx, y1 + r1 * ny),
                         _fixed(x1 - r1 * nx, y1 - r1 * ny), _fixed(x0 - r0 * nx, y0 - r0 * ny)], np.int32)

    def draw(canvas, value):
        if quad is not None:
            cv2.fillConvexPoly(canvas, quad, value, cv2.LINE_8, SHIFT)
        for centre, radius in ends:
            cv2.circle(canvas, centre, radius, value, -1, cv2.LINE_8, SHIFT)
    return draw


def polygon(points: list[np.ndarray]) -> Draw:
    fixed = np.rint(np.array(points) * _ONE).astype(np.int32)
    return lambda canvas, value: cv2.fillConvexPoly(canvas, fixed, value, cv2.LINE_8, SHIFT)


def ellipse(centre: np.ndarray, axes: tuple[float, float], angle_deg: float) -> Draw:
    centre_fixed = _fixed(*np.asarray(centre).tolist())
    axes_fixed = (max(1, round(axes[0] * _ONE)), max(1, round(axes[1] * _ONE)))
    return lambda canvas, value: cv2.ellipse(canvas, centre_fixed, axes_fixed, angle_deg, 0, 360,
                                             value, -1, cv2.LINE_8, SHIFT)


@dataclass(frozen=True, eq=False)
class Part:
    name: str
    depth: float  # for painter's order and self-occlusion: larger is farther
    layer: int  # breaks depth ties: torso, then upper limbs and neck, then forearms, shins, hands, feet, then head
    shapes: tuple[tuple[Draw, Colour], ...]


def _torso_half_width(section: str, yaw_deg: float, scale: float) -> float:
    a, c = TORSO_SECTIONS[section]
    yaw = math.radians(yaw_deg)
    return scale * math.hypot(a * math.cos(yaw), c * math.sin(yaw))


def body_parts(p: dict[str, np.ndarray], z: dict[str, float], spec: FigureSpec, yaw: float,
               face_visible: dict[str, bool]) -> list[Part]:
    """Every drawn piece of the figure, from 2-D points p (canvas pixels) and depths z."""
    h, look = spec.height, spec.appearance
    radius = {k: (max(1.2, r0 * h * look.build), max(1.2, r1 * h * look.build)) for k, (r0, r1) in LIMB_RADII.items()}
    parts = []

    # Torso: a shirt quad from the shoulders to the belt, a trousers quad to below the hips.
    up = p["neck"] - p["pelvis"]
    up_len = max(float(np.hypot(*up)), 1e-6)
    up_dir = up / up_len
    across = np.array([-up_dir[1], up_dir[0]])
    width_scale = h * (0.8 + 0.2 * look.build)
    rows = {"shoulders": p["neck"] + 0.02 * h * up_dir, "belt": p["pelvis"] + 0.22 * up,
            "hips": p["pelvis"] - 0.05 * h * up_dir}
    edge = {k: (c + _torso_half_width(k, yaw, width_scale) * across, c - _torso_half_width(k, yaw, width_scale) * across)
            for k, c in rows.items()}
    torso_depth = (z["neck"] + z["pelvis"]) / 2
    shirt = polygon([edge["shoulders"][0], edge["belt"][0], edge["belt"][1], edge["shoulders"][1]])
    pelvis = polygon([edge["belt"][0], edge["hips"][0], edge["hips"][1], edge["belt"][1]])
    parts.append(Part("torso", torso_depth, 0, ((shirt, look.shirt), (pelvis, look.trousers))))

    for side, _, _ in SIDES:
        def limb(name, a, b, colour, layer):
            r0, r1 = radius[name]
            parts.append(Part(f"{side}_{name}", (z[a] + z[b]) / 2, layer, ((capsule(p[a], p[b], r0, r1), colour),)))
        limb("upper_arm", f"{side}_shoulder", f"{side}_elbow", look.shirt, 1)
        limb("forearm", f"{side}_elbow", f"{side}_wrist", look.shirt if look.long_sleeves else look.skin, 2)
        limb("hand", f"{side}_wrist", f"{side}_hand", look.skin, 2)
        limb("thigh", f"{side}_hip", f"{side}_knee", look.trousers, 1)
        limb("shin", f"{side}_knee", f"{side}_ankle", look.skin if look.shorts else look.trousers, 2)
        limb("foot", f"{side}_ankle", f"{side}_toe", look.shoes, 2)

    # Head: hair colour all round, a face towards the front, eyes as dots when large enough.
    r = radius["neck"]
    parts.append(Part("neck", (z["neck"] + z["head"]) / 2, 1, ((capsule(p["neck"], p["head"], r[0], r[1]), look.skin),)))
    tilt = p["head"] - p["neck"]
    angle = math.degrees(math.atan2(tilt[0], -tilt[1]))
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    lateral = h * math.hypot(HEAD_RADII[0] * cy, HEAD_RADII[2] * sy)
    vertical = h * HEAD_RADII[1]
    if look.long_hair:
        # Hair hangs down the back: behind the torso seen from the front, over it from behind.
        backward = -0.04 * h * sy * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        hair_end = p["neck"] + 0.3 * (p["pelvis"] - p["neck"]) + backward
        hair = capsule(p["head"] + backward, hair_end, lateral * 0.9, lateral * 0.75)
        parts.append(Part("long_hair", torso_depth + 0.07 * h * cy, 1, ((hair, look.hair),)))
    shapes = [(ellipse(p["head"], (lateral, vertical), angle), look.hair)]
    if cy > -0.5:
        u = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        v = np.array([-u[1], u[0]])
        face_centre = p["head"] + u * (0.3 * lateral * sy) + v * (0.15 * vertical)
        face_axes = (lateral * (0.55 + 0.25 * max(cy, 0.0)), vertical * 0.8)
        shapes.append((ellipse(face_centre, face_axes, angle), look.skin))
        if vertical >= 6:
            for eye in ("left_eye", "right_eye"):
                if face_visible[eye]:
                    shapes.append((capsule(p[eye], p[eye], 0.1 * vertical, 0.1 * vertical), (40, 30, 30)))
    # A pixel-sized anchor under each face keypoint keeps it on the silhouette
    # even on tiny heads, where rounding could put it just outside the ellipse.
    for name in FACE_OFFSETS:
        shapes.append((capsule(p[name], p[name], 1.0, 1.0), look.skin if cy > -0.5 else look.hair))
    parts.append(Part("head", z["head"], 3, tuple(shapes)))
    return parts


def _owner_parts() -> dict[str, set[str]]:
    """The parts each keypoint lies on: covering it with one of these does not hide it."""
    joints = {"shoulder": ("upper_arm",), "elbow": ("upper_arm", "forearm"), "wrist": ("forearm", "hand"),
              "hip": ("thigh",), "knee": ("thigh", "shin"), "ankle": ("shin", "foot")}
    owners = {name: {"head"} for name in FACE_OFFSETS}
    owners.update({f"{side}_{joint}": {f"{side}_{part}" for part in parts}
                   for side, _, _ in SIDES for joint, parts in joints.items()})
    return owners


OWNER_PARTS = _owner_parts()


def render_figure(spec: FigureSpec) -> RenderedFigure:
    """Draw one figure on its own canvas, with keypoints and self-occlusion flags."""
    pose, h, yaw = clamp_pose(spec.pose), float(spec.height), facing_yaw(spec.yaw)
    pts3, normals = body_points(pose, h)
    names = list(pts3)
    xy, depth = project(np.array([pts3[n] for n in names]), yaw)
    roll = math.radians(spec.roll)
    c, s = math.cos(roll), math.sin(roll)
    xy = xy @ np.array([[c, s], [-s, c]])  # rotate clockwise on screen about the hips
    # Stand the figure on its ground point: lowest point on the ground, hips above it.
    xy += np.array([spec.position[0], spec.position[1] - xy[:, 1].max()])

    margin = 0.17 * h * max(1.0, spec.appearance.build) + 3
    origin = np.floor(xy.min(axis=0) - margin).astype(int)
    size = np.ceil(xy.max(axis=0) + margin).astype(int) - origin
    canvas_xy = xy - origin
    p = dict(zip(names, canvas_xy))
    z = dict(zip(names, depth.tolist()))
    face_visible = {n: -_depth_of(normals[n], yaw) > -FACE_HIDDEN_AFTER[n] for n in FACE_OFFSETS}

    parts = body_parts(p, z, spec, yaw, face_visible)
    # Painter's order, far to near; depths within 1% of the height count as a
    # tie so the layer decides and a front view does not flicker.
    parts.sort(key=lambda part: (-round(part.depth / (0.01 * h)), part.layer))
    labels = np.zeros((size[1], size[0]), np.uint8)  # which shape is seen at each pixel
    palette, shape_part = [(0, 0, 0)], [-1]
    for index, part in enumerate(parts):
        for draw, colour in part.shapes:
            palette.append(colour)
            shape_part.append(index)
            draw(labels, (len(palette) - 1,))
    image = np.take(np.array(palette, np.uint8), labels, axis=0)  # several times faster than palette[labels]

    keypoints = xy[[names.index(k) for k in COCO.keypoints]]
    kx, ky = np.clip(np.rint(keypoints - origin).astype(int), 0, size - 1).T
    covering = labels[ky, kx]
    self_hidden = np.zeros(len(COCO.keypoints), bool)
    for k, name in enumerate(COCO.keypoints):
        cover = parts[shape_part[covering[k]]] if covering[k] else None
        # Another part hides a joint only if it is clearly in front of it, not
        # merely touching it (an arm hanging beside the hip does not hide it).
        margin = (0.02 if name in FACE_OFFSETS else 0.05) * h
        covered = cover is not None and cover.name not in OWNER_PARTS[name] and cover.depth < z[name] - margin
        self_hidden[k] = covered or (name in FACE_OFFSETS and not face_visible[name])
    return RenderedFigure((int(origin[0]), int(origin[1])), image, labels > 0, keypoints, self_hidden,
                          float(spec.position[1]), h)


# --- pose and appearance library


def _pair(rng: np.random.Generator, lo: float, hi: float) -> Pair:
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def standing_pose(rng: np.random.Generator) -> Pose:
    return Pose(shoulder_flex=_pair(rng, -15, 20), shoulder_abduct=_pair(rng, 3, 25),
                elbow_flex=_pair(rng, 0, 40), elbow_twist=_pair(rng, -20, 40),
                hip_flex=_pair(rng, -5, 8), hip_abduct=_pair(rng, 0, 10), knee_flex=_pair(rng, 0, 12),
                torso_lean=float(rng.uniform(-3, 8)))


def walking_pose(phase: float, stride: float = 1.0) -> Pose:
    """A point of the gait cycle; phase in radians, the left leg is forward at pi/2."""
    s, c = math.sin(phase), math.cos(phase)
    hip = 25.0 * stride * s
    # The knee bends most in mid-swing, while the hip is swinging forward.
    knee = (5 + 55 * stride * max(c, 0.0) ** 2, 5 + 55 * stride * max(-c, 0.0) ** 2)
    arm = 22.0 * stride * s  # arms swing against the legs
    return Pose(shoulder_flex=(-arm, arm), shoulder_abduct=(6.0, 6.0),
                elbow_flex=(12 + 25 * stride * max(-s, 0.0), 12 + 25 * stride * max(s, 0.0)),
                hip_flex=(hip, -hip), hip_abduct=(2.0, 2.0), knee_flex=knee, torso_lean=4.0)


def waving_pose(phase: float, side: int = 1, base: Pose | None = None) -> Pose:
    """`base` with one arm raised sideways, forearm up and swinging; side 0 is the left arm, 1 the right."""
    def arm(pair: Pair, value: float) -> Pair:
        return (value, pair[1]) if side == 0 else (pair[0], value)
    base, s = base or Pose(), math.sin(phase)
    return replace(base, shoulder_flex=arm(base.shoulder_flex, 10.0),
                   shoulder_abduct=arm(base.shoulder_abduct, 100 + 10 * s),
                   elbow_flex=arm(base.elbow_flex, 55 + 30 * s), elbow_twist=arm(base.elbow_twist, 90.0))


def arms_raised_pose(rng: np.random.Generator) -> Pose:
    base = standing_pose(rng)
    if rng.random() < 0.5:  # raised sideways
        return replace(base, shoulder_abduct=_pair(rng, 120, 180), elbow_flex=_pair(rng, 0, 40))
    return replace(base, shoulder_flex=_pair(rng, 90, 175), shoulder_abduct=_pair(rng, 0, 30),
                   elbow_flex=_pair(rng, 0, 50))


def crouching_pose(rng: np.random.Generator) -> Pose:
    hip, knee = rng.uniform(40, 95), rng.uniform(60, 130)
    return Pose(shoulder_flex=_pair(rng, 10, 80), shoulder_abduct=_pair(rng, 5, 30),
                elbow_flex=_pair(rng, 10, 80), hip_flex=(hip + rng.uniform(-10, 10), hip + rng.uniform(-10, 10)),
                hip_abduct=_pair(rng, 5, 20), knee_flex=(knee + rng.uniform(-10, 10), knee + rng.uniform(-10, 10)),
                torso_lean=float(rng.uniform(10, 40)))


def free_pose(rng: np.random.Generator) -> Pose:
    """Any angles within moderate ranges: reaching, gesturing, odd stances."""
    return Pose(shoulder_flex=_pair(rng, -40, 150), shoulder_abduct=_pair(rng, -5, 150),
                elbow_flex=_pair(rng, 0, 140), elbow_twist=_pair(rng, -50, 90),
                hip_flex=_pair(rng, -25, 60), hip_abduct=_pair(rng, 0, 30), knee_flex=_pair(rng, 0, 70),
                torso_lean=float(rng.uniform(-10, 30)))


def random_pose(rng: np.random.Generator) -> Pose:
    """Mostly upright everyday poses, sometimes unusual ones."""
    kind = rng.choice(6, p=[0.28, 0.3, 0.1, 0.1, 0.08, 0.14])
    if kind == 0:
        return standing_pose(rng)
    if kind == 1:
        return walking_pose(rng.uniform(0, 2 * math.pi), rng.uniform(0.4, 1.1))
    if kind == 2:
        return arms_raised_pose(rng)
    if kind == 3:
        return waving_pose(rng.uniform(0, 2 * math.pi), int(rng.integers(2)), standing_pose(rng))
    if kind == 4:
        return crouching_pose(rng)
    return free_pose(rng)


SKIN_TONES = ((200, 225, 255), (160, 200, 240), (125, 170, 225), (95, 135, 190), (60, 95, 145), (45, 65, 100))
HAIR_COLOURS = ((20, 20, 25), (30, 45, 70), (40, 75, 125), (100, 170, 215), (165, 165, 170), (35, 55, 150))


def _jitter(rng: np.random.Generator, colour, amount: int) -> Colour:
    return tuple(int(v) for v in np.clip(np.array(colour) + rng.integers(-amount, amount + 1, 3), 0, 255))


def random_clothing_colour(rng: np.random.Generator) -> Colour:
    colour = rng.integers(0, 256, 3)
    if rng.random() < 0.4:  # many clothes are dull: pull towards a grey
        colour = (colour + rng.integers(20, 200)) // 2
    return tuple(int(v) for v in colour)


def random_appearance(rng: np.random.Generator) -> Appearance:
    return Appearance(
        skin=_jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 12),
        hair=_jitter(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 10),
        shirt=random_clothing_colour(rng), trousers=random_clothing_colour(rng),
        shoes=_jitter(rng, (40, 40, 40), 35),
        long_sleeves=bool(rng.random() < 0.5), shorts=bool(rng.random() < 0.2),
        long_hair=bool(rng.random() < 0.3), build=float(rng.uniform(0.8, 1.3)))
