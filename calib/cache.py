"""The calibration cache: tensor ranges kept on disk, keyed by everything they depend on.

The key is a SHA-256 over the model file's bytes, every calibration input
(path, size and modification time of each image or video, the frames taken,
or the generator's seed and source), the preprocessing the model's metadata
asks for (input size, mean, std, input format, letterbox padding), the
calibration settings and the onnxruntime version. The file name carries the
key and the file repeats it in full, so a cache made from other data, another
model or other settings is never read: it is simply not found.

The file is onnxruntime's own calibration cache (``save_tensors_data``'s
JSON) with an ``rtpose`` entry added, so ``quantize_static(...,
calibration_cache_path=...)`` reads it directly and skips the calibration pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import onnxruntime as ort
from onnxruntime.quantization.calibrate import CalibrationCacheEncoder, TensorsData

from calib.data import CalibrationData
from rtpose.model_meta import ModelMeta
from rtpose.preprocess import PAD_VALUE

CACHE_FORMAT = 1
CACHE_DIR_NAME = ".rtpose-calib-cache"


def cache_key(model_bytes: bytes, data: CalibrationData, meta: ModelMeta, settings: dict) -> str:
    parts = {
        "format": CACHE_FORMAT,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "inputs": data.fingerprint,
        "preprocessing": {"input_width": meta.input_width, "input_height": meta.input_height,
                          "mean": list(meta.mean), "std": list(meta.std), "input_format": meta.input_format,
                          "pad_value": PAD_VALUE},
        "settings": settings,
        "onnxruntime": ort.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_file(cache_dir: Path, method: str, key: str) -> Path:
    return Path(cache_dir) / f"ranges-{method}-{key[:24]}.json"


def load_ranges(path: Path, key: str) -> dict | None:
    """The ``rtpose`` entry of the cache at ``path`` if it holds ranges for ``key``; None otherwise."""
    try:
        entry = json.loads(Path(path).read_text()).get("rtpose", {})
    except (OSError, ValueError, AttributeError):
        return None              # missing or damaged: calibrate again and overwrite it
    return entry if entry.get("key") == key else None


def save_ranges(path: Path, key: str, ranges: TensorsData, about: dict) -> Path:
    """Write ``ranges`` in onnxruntime's cache format, plus the key; atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = ranges.to_dict()
    payload["smooth_quant"] = False                   # what quantize_static checks in its caches
    payload["rtpose"] = {"key": key, **about}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ranges-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, cls=CalibrationCacheEncoder)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
