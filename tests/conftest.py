"""Shared fixtures: the real sample data beside the checkout, and small synthetic sets."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_images(shared_data) -> list:
    """The real sample photos (COCO, CrowdPose, MPII), as OpenCV reads them."""
    import cv2
    paths = [p for folder in ("coco", "crowdpose", "mpii") for p in sorted(shared_data.glob(f"{folder}/*.jpg"))]
    return [cv2.imread(str(p)) for p in paths]
