"""Images in, people out, in original image coordinates: preprocess -> engine -> decode."""

from __future__ import annotations

import numpy as np

from rtpose.decoder import People
from rtpose.fast_decoder import decode_outputs
from rtpose.engine import Engine
from rtpose.model_meta import DecoderConfig
from rtpose.preprocess import preprocess


def estimate(engine: Engine, images: list[np.ndarray], config: DecoderConfig | None = None) -> list[People]:
    """Run one batch of BGR images through ``engine``; one :class:`People` per image."""
    prepared = [preprocess(image, engine.meta) for image in images]
    batch = np.concatenate([p[0] for p in prepared])
    outputs = engine.infer(batch)
    return [decode_outputs(tuple(o[i] for o in outputs), engine.meta, config).map_xy(box.to_original)
            for i, (_, box) in enumerate(prepared)]
