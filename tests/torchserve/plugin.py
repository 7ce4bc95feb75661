"""Seed 004's CustomImageHandler as a kxform plugin: the one-line subclass a TorchServe user writes.

``index_to_name.json`` beside this file is TorchServe's label mapping for ImageNet's classes, written from
torchvision's ``ResNet50_Weights.IMAGENET1K_V2.meta["categories"]`` (the same list ``tools/build_models.py``
writes to ``models/resnet50/labels.txt``). The test registers ``Resnet`` as an entry point of a
distribution it writes into a temporary directory (no pip install).
"""

from __future__ import annotations

import kxform.torchserve
from tests.torchserve.custom_handler import CustomImageHandler


class Resnet(kxform.torchserve.Handler):
    handler = CustomImageHandler
    predictor_model = "resnet50"
    index_to_name = "index_to_name.json"
