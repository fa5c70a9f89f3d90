"""The one definition of a keypoint layout, shared by every part of rtpose.

A :class:`Skeleton` names the keypoints, says which are mirror images of each
other (for flip augmentation and flip test), gives the OKS sigmas used by COCO
evaluation, and lists the limbs along which the model predicts *guiding
offsets* (SimplePose): for every limb ``(a, b)`` the model predicts, around
each keypoint ``a``, the vector to keypoint ``b`` of the same person, and the
reverse vector around ``b``. Grouping wants more limbs than a body has bones
(links that skip a keypoint, cross links); ``bones`` are the ones drawn. The
trainer's target encoder, the exported model metadata and the runtime decoder
all read the same object, so a layout is changed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Skeleton:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    limbs: tuple[tuple[int, int], ...]
    bones: tuple[tuple[int, int], ...] = ()    # the limbs drawn; empty: all of them

    def __post_init__(self) -> None:
        n = len(self.keypoints)
        if len(self.sigmas) != n:
            raise ValueError(f"{self.name}: {len(self.sigmas)} sigmas for {n} keypoints")
        if not self.bones:
            object.__setattr__(self, "bones", self.limbs)
        for a, b in (*self.flip_pairs, *self.limbs, *self.bones):
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise ValueError(f"{self.name}: bad keypoint pair ({a}, {b})")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @cached_property
    def directed_limbs(self) -> tuple[tuple[int, int], ...]:
        """Each limb in both directions: offset channel pair ``i`` points ``a -> b``."""
        return tuple(edge for a, b in self.limbs for edge in ((a, b), (b, a)))

    @property
    def num_offset_channels(self) -> int:
        return 2 * len(self.directed_limbs)

    @cached_property
    def flip_permutation(self) -> tuple[int, ...]:
        """Index map that swaps left and right keypoints (an involution)."""
        perm = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return tuple(perm)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "keypoints": list(self.keypoints),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "sigmas": list(self.sigmas),
            "limbs": [list(p) for p in self.limbs],
            "bones": [list(p) for p in self.bones],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Skeleton":
        keypoints = tuple(d["keypoints"])
        if "bones" in d:
            bones = tuple(tuple(p) for p in d["bones"])
        else:   # a file from before bones: the known layout's, else all limbs
            known = SKELETONS.get(d["name"])
            bones = known.bones if known and known.keypoints == keypoints else ()
        return cls(
            name=str(d["name"]),
            keypoints=keypoints,
            flip_pairs=tuple(tuple(p) for p in d["flip_pairs"]),
            sigmas=tuple(float(s) for s in d["sigmas"]),
            limbs=tuple(tuple(p) for p in d["limbs"]),
            bones=bones,
        )


def _pairs_by_name(names: tuple[str, ...], pairs: list[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    index = {n: i for i, n in enumerate(names)}
    return tuple((index[a], index[b]) for a, b in pairs)


def _mirror_pairs(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    pairs = []
    for i, n in enumerate(names):
        for prefix, other in (("left_", "right_"), ("l_", "r_")):
            if n.startswith(prefix):
                pairs.append((i, names.index(other + n[len(prefix):])))
    return tuple(pairs)


# Shoulders down, COCO and CrowdPose name their keypoints alike and share these bones.
_BODY_BONES = [
    ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
    ("left_hip", "right_hip"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
]

# Links across a person that no chain of bones needs, for people cut by the
# image border: with the hips out of frame the two legs, and an arm and the
# legs, have no labelled keypoint in common, and without these a person seen
# from the knees down decodes as two one-legged people. With them the
# encode/decode round trip of crowds of 20-30 people went from 0.93-0.94 to
# 0.96-0.97 AP (tests/test_roundtrip.py; benchmarks/README.md, "Encoder/decoder
# round trip").
_CUT_LINKS = [
    ("left_knee", "right_knee"), ("left_ankle", "right_ankle"),
    ("left_wrist", "left_hip"), ("right_wrist", "right_hip"),
]

_COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# A spanning tree over the 17 keypoints plus redundant links, as SimplePose
# uses: when a keypoint in the middle of a chain is missed (an elbow, a knee)
# the links that skip it (shoulder -> wrist, hip -> ankle) keep the rest of the
# person together, and the torso diagonals join the two halves.
COCO = Skeleton(
    name="coco",
    keypoints=_COCO_NAMES,
    flip_pairs=_mirror_pairs(_COCO_NAMES),
    # pycocotools' COCOeval sigmas.
    sigmas=(.026, .025, .025, .035, .035, .079, .079, .072, .072,
            .062, .062, .107, .107, .087, .087, .089, .089),
    limbs=_pairs_by_name(_COCO_NAMES, [
        ("nose", "left_eye"), ("nose", "right_eye"),
        ("left_eye", "left_ear"), ("right_eye", "right_ear"),
        ("nose", "left_shoulder"), ("nose", "right_shoulder"),
        *_BODY_BONES,
        ("left_eye", "right_eye"),
        ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
        ("left_shoulder", "left_wrist"), ("right_shoulder", "right_wrist"),
        ("left_hip", "left_ankle"), ("right_hip", "right_ankle"),
        ("left_shoulder", "right_hip"), ("right_shoulder", "left_hip"),
        *_CUT_LINKS,
    ]),
    # COCO's own skeleton (the category's "skeleton" in its annotation files).
    bones=_pairs_by_name(_COCO_NAMES, [
        ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "right_eye"),
        ("left_eye", "left_ear"), ("right_eye", "right_ear"),
        ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
        *_BODY_BONES,
    ]),
)

_CROWDPOSE_NAMES = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
)

CROWDPOSE = Skeleton(
    name="crowdpose",
    keypoints=_CROWDPOSE_NAMES,
    flip_pairs=_mirror_pairs(_CROWDPOSE_NAMES),
    # The CrowdPose evaluation toolkit's sigmas.
    sigmas=(.079, .079, .072, .072, .062, .062, .107, .107,
            .087, .087, .089, .089, .079, .079),
    limbs=_pairs_by_name(_CROWDPOSE_NAMES, [
        ("head", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
        *_BODY_BONES, *_CUT_LINKS,
    ]),
    bones=_pairs_by_name(_CROWDPOSE_NAMES, [("head", "neck"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
                                            *_BODY_BONES]),
)

# MPII joint order as in the Simple Baselines annotation files.
_MPII_NAMES = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis",
    "thorax", "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder",
    "l_shoulder", "l_elbow", "l_wrist",
)

MPII = Skeleton(
    name="mpii",
    keypoints=_MPII_NAMES,
    flip_pairs=_mirror_pairs(_MPII_NAMES),
    # MPII has no OKS sigmas of its own; these borrow the COCO value of the
    # nearest COCO joint so OKS-based tools give sensible numbers.
    sigmas=(.089, .087, .107, .107, .087, .089, .107, .079,
            .079, .035, .062, .072, .079, .079, .072, .062),
    limbs=_pairs_by_name(_MPII_NAMES, [
        ("r_ankle", "r_knee"), ("r_knee", "r_hip"), ("r_hip", "pelvis"),
        ("l_hip", "pelvis"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
        ("pelvis", "thorax"), ("thorax", "upper_neck"), ("upper_neck", "head_top"),
        ("thorax", "r_shoulder"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
        ("thorax", "l_shoulder"), ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"),
    ]),
)

SKELETONS = {s.name: s for s in (COCO, CROWDPOSE, MPII)}


def skeleton_for_keypoints(names: list[str] | tuple[str, ...]) -> Skeleton:
    """The known skeleton whose keypoint names are exactly ``names``."""
    for skeleton in SKELETONS.values():
        if tuple(names) == skeleton.keypoints:
            return skeleton
    raise ValueError(f"no known skeleton has the keypoints {list(names)}")
