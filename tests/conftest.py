"""Shared fixtures: the real sample data beside the checkout, and small synthetic sets."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# The smallest bottom-up model the trainer builds, for tests that train it end to end in seconds.
TINY_MODEL = "input_width: 128\ninput_height: 96\nwidths: [8, 8, 16, 16, 16]\nneck_width: 16\nhead_width: 16\n"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


def _photos(shared_data: Path, folders: tuple[str, ...]) -> list:
    import cv2
    return [cv2.imread(str(p)) for folder in folders for p in sorted(shared_data.glob(f"{folder}/*.jpg"))]


@pytest.fixture(scope="session")
def real_images(shared_data) -> list:
    """The real sample photos (COCO, CrowdPose, MPII), as OpenCV reads them."""
    return _photos(shared_data, ("coco", "crowdpose", "mpii"))


@pytest.fixture(scope="session")
def coco_crowdpose_images(shared_data) -> list:
    """The COCO and CrowdPose sample photos (6; crowds rather than MPII's single people)."""
    return _photos(shared_data, ("coco", "crowdpose"))
