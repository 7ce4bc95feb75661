"""Real photos shared by the codec tests: scikit-learn's two sample JPEGs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from sklearn.datasets import load_sample_images


@pytest.fixture(scope="session")
def photo_paths() -> dict[str, Path]:
    """scikit-learn's two sample JPEG photos (640 x 427), keyed "china" and "flower"."""
    return {Path(name).stem: Path(name) for name in load_sample_images().filenames}


@pytest.fixture(scope="session")
def flower(photo_paths: dict[str, Path]) -> Image.Image:
    with Image.open(photo_paths["flower"]) as image:
        return image.convert("RGB")
