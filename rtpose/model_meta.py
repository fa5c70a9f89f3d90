"""What a model file says about itself.

Every exported rtpose model carries a :class:`ModelMeta` (as JSON in the ONNX
``metadata_props`` under the key ``rtpose``), so the runtime needs no side
arguments: input size, normalisation, output layout, skeleton and decoder
defaults all come from the file. The trainer builds the same object from its
config, so training, export and runtime agree by construction.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from rtpose.skeleton import COCO, Skeleton

META_KEY = "rtpose"
FORMAT_VERSION = 1

# What a model's input tensor holds. "float32_nchw_rgb": [N, 3, H, W] RGB,
# (pixel - mean) / std, made on the host by rtpose.preprocess.normalize.
# "uint8_nhwc_bgr": [N, H, W, 3] letterboxed BGR pixels as OpenCV gives them;
# the cast, channel flip, normalisation and transpose are nodes at the start of
# the model's graph (export/input_graph.py), so they run where the model runs:
# on the GPU for TensorRT, and the host uploads a quarter of the bytes.
FLOAT32_NCHW_RGB = "float32_nchw_rgb"
UINT8_NHWC_BGR = "uint8_nhwc_bgr"
INPUT_FORMATS = (FLOAT32_NCHW_RGB, UINT8_NHWC_BGR)


@dataclass(frozen=True)
class DecoderConfig:
    """The knobs of the bottom-up decoder (SimplePose's, named as there)."""

    # A peak below this is not a keypoint. 0.2, not 0.1: the shipped model's weak extra peaks then
    # cost 0.8 instead of 1.3 ms of decoding at 10 people, for 0.1 AP point (benchmarks: "Decoding").
    heatmap_threshold: float = 0.2
    top_k: int = 40                  # peaks kept per keypoint type
    # Map pixels a guided point may miss the peak it joins by (plus a quarter of the limb's length).
    # 8, not 3: grouping takes the best connections first, so a looser cut loses few people to
    # wrong joins and keeps more of the right ones; +0.013 held-out AP for the shipped model,
    # +0.007 on crowds, 0.1-0.3 ms more decoding at 10-30 people (benchmarks: "Decoder default").
    max_offset_distance: float = 8.0
    # Lowest confidence a person needs, before its size ranks it (rtpose.decoder.score_people;
    # benchmarks: "Decoder default").
    person_threshold: float = 0.15
    max_persons: int = 40
    min_keypoints: int = 2
    # A peak above this may fill a keypoint grouping left missing (rtpose.decoder.fill_missing);
    # 1 turns filling off. Held-out AP of 30-minute models +0.012 to +0.013 over no filling
    # (benchmarks/README.md, "Filling missing keypoints").
    fill_threshold: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.heatmap_threshold < 1.0:
            raise ValueError("heatmap_threshold must be in [0, 1)")
        if not 0.0 <= self.fill_threshold <= 1.0:
            raise ValueError("fill_threshold must be in [0, 1] (1: no filling)")
        if self.top_k < 1 or self.max_persons < 1 or self.min_keypoints < 1:
            raise ValueError("top_k, max_persons and min_keypoints must be at least 1")
        if self.max_offset_distance <= 0:
            raise ValueError("max_offset_distance must be positive")


@dataclass(frozen=True)
class ModelMeta:
    """Everything the runtime must know to feed a model and read its outputs.

    Inputs are ``float32 [N, 3, H, W]`` in RGB, ``(pixel - mean) / std`` with
    pixels in 0..255. Outputs, in this order:

    - ``heatmaps [N, K, H/s, W/s]``, already through a sigmoid;
    - ``offsets [N, 2L, H/s, W/s]``: channel pair ``i`` is ``(dx, dy)`` from
      keypoint ``a`` to keypoint ``b`` of directed limb ``i`` of the skeleton,
      in map pixels divided by ``offset_scale``;
    - ``refinements [N, 2K, H/s, W/s]``: channel pair ``k`` is ``(dx, dy)`` from
      a map cell to keypoint ``k`` near it, in map pixels: where within its
      cell a keypoint lies, which a heatmap peak alone says only roughly.

    A model with ``peak_top_k = T > 0`` finds its peaks in the graph (see
    ``export/peak_graph.py``) and outputs, in place of the dense maps (or
    after them), its best ``T`` peaks per keypoint type after 3x3 non-maximum
    suppression, best first:

    - ``peak_scores [N, K, T]``: heatmap value, -1 in slots with no peak;
    - ``peak_cells [N, K, T]`` int64: the peak's cell, ``y * (W/s) + x``;
    - ``peak_offsets [N, L, 2, T]``: directed limb ``i``'s ``(dx, dy)`` at
      the peaks of its first keypoint (as channel pair ``i`` of ``offsets``);
    - ``peak_refinements [N, K, 2, T]``: ``(dx, dy)`` at each peak (as in
      ``refinements``).
    """

    input_width: int = 320
    input_height: int = 256
    stride: int = 4
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    offset_scale: float = 8.0
    skeleton: Skeleton = COCO
    architecture: str = "simplepose-small"
    # "bottom-up": the outputs above, for whole images. "top-down": one person
    # per input (a crop around a box; see rtpose/topdown.py), one output
    # ``heatmaps [N, K, H/s, W/s]`` of raw (unsquashed) heatmaps.
    approach: str = "bottom-up"
    input_name: str = "image"
    input_format: str = "float32_nchw_rgb"   # or "uint8_nhwc_bgr": see INPUT_FORMATS
    output_names: tuple[str, ...] = ("heatmaps", "offsets", "refinements")
    peak_top_k: int = 0   # peaks per keypoint type found in the graph; 0: dense maps only
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    versions: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def map_width(self) -> int:
        return self.input_width // self.stride

    @property
    def map_height(self) -> int:
        return self.input_height // self.stride

    def with_versions(self, **versions: str) -> "ModelMeta":
        return replace(self, versions={**self.versions, **versions})

    def to_json(self) -> str:
        d = asdict(self)
        d["skeleton"] = self.skeleton.to_dict()
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        d = json.loads(text)
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"rtpose metadata format {d.get('format_version')} is not {FORMAT_VERSION}")
        d["skeleton"] = Skeleton.from_dict(d["skeleton"])
        d["decoder"] = DecoderConfig(**d["decoder"])
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        d["output_names"] = tuple(d["output_names"])
        return cls(**d)


def meta_from_text(text: str | None, source) -> ModelMeta:
    """The metadata a model file stores under :data:`META_KEY`; a ValueError naming the file if it has none."""
    if text is None:
        raise ValueError(f"{source} is not an rtpose pose model (no '{META_KEY}' metadata in the file)")
    try:
        return ModelMeta.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{source}: unreadable rtpose metadata ({exc})") from None
