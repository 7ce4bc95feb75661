"""The reference: the seeds' hand-written transformer (seed 000's ``ImageTransformerV2``), run on kserve 0.21.

The code below is the seed's, line for line, adapted only where kserve 0.21 or the benchmark
requires it; each change is marked ``# ADAPTED (n)`` with its number here:

1. ``preprocess``/``postprocess`` take the ``headers`` argument kserve 0.21 passes (a TypeError otherwise).
2. ``shape`` is ``[len(instances), 3, H, W]``: the seed's fixed ``[1, 3, 32, 32]`` is refused by Triton
   for more than one image (the 8-images scenario) and is wrong for 224x224 images.
3. ``postprocess`` reads the response as a dict: kserve 0.21 hands it an ``InferResponse`` whose
   ``to_rest()`` returns ``(dict, json_length)``.
4. ``--transform imagenet`` swaps in torchvision's ImageNet recipe (Resize 256, CenterCrop 224,
   Normalize with the ImageNet statistics) for the 224x224 scenario; ``cifar10`` is the seed's.
5. ``transformer.load()`` is called before the server starts: kserve 0.21 refuses to start with
   a model that is not ready (``NoModelReady``), and the seed's model never becomes ready otherwise.
6. The server starts with ``kserve.ModelServer().start(...)``: in kserve 0.21 ``start`` is synchronous
   and runs its own event loop (the seed wraps it in ``asyncio.run``). ``--model_name``, ``--predictor_host`` and
   ``--predictor_protocol v2`` are kserve's own flags: the seed's ``__main__`` declares them again,
   which argparse refuses, and its ``--protocol v2`` is parsed but ignored by kserve 0.21 (which then
   calls ``/v1/...`` on Triton and gets 404).

Unchanged on purpose: PIL decoding, the ``np.asarray``/``Image.fromarray`` round trip, torchvision's
``ToTensor``/``Normalize``, ``logging.info(res)`` on every image, ``res.tolist()`` into the V2 JSON body
sent by kserve's own ``InferenceRESTClient``, and ``.tolist()`` of the outputs. The benchmark sends
``Content-Type: application/json`` (the seed's curl sends form-urlencoded, which kserve 0.21 passes
to ``preprocess`` as bytes, and the seed's code fails on it).

Run: ``python benchmarks/reference_transformer.py --model_name cifar10 --predictor_host 127.0.0.1:8000
--predictor_protocol v2 --http_port 8080 [--transform cifar10|imagenet]``.
"""
# mypy: ignore-errors
# ruff: noqa: RUF013, UP006, UP035 - the seed's typing (and kserve's) is kept as written

import argparse
import base64
import io
import logging
from typing import Dict

import kserve
import numpy as np
import torchvision.transforms as transforms
from PIL import Image

logging.basicConfig(level=kserve.constants.KSERVE_LOGLEVEL)

TRANSFORMS = {
    "cifar10": transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]),
    # ADAPTED (4): torchvision's ImageNet recipe for the 224x224 scenario.
    "imagenet": transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    ),
}
transform = TRANSFORMS["cifar10"]


def image_transform(instance):
    byte_array = base64.b64decode(instance["image_bytes"]["b64"])
    image = Image.open(io.BytesIO(byte_array))
    a = np.asarray(image)
    im = Image.fromarray(a)
    res = transform(im)
    logging.info(res)
    return res.tolist()


class ImageTransformerV2(kserve.Model):
    def __init__(self, name: str, predictor_host: str, protocol: str):
        super().__init__(name)
        self.predictor_host = predictor_host
        self.protocol = protocol

    def preprocess(self, inputs: Dict, headers: Dict[str, str] = None) -> Dict:  # ADAPTED (1)
        data = [image_transform(instance) for instance in inputs["instances"]]
        return {
            "inputs": [
                {
                    "name": "INPUT__0",
                    "shape": [len(data), 3, len(data[0][0]), len(data[0][0][0])],  # ADAPTED (2)
                    "datatype": "FP32",
                    "data": data,
                }
            ]
        }

    def postprocess(self, results: Dict, headers: Dict[str, str] = None) -> Dict:  # ADAPTED (1)
        if isinstance(results, kserve.InferResponse):  # ADAPTED (3)
            results, _ = results.to_rest()
        return {
            output["name"]: np.array(output["data"]).reshape(output["shape"]).tolist() for output in results["outputs"]
        }


# ADAPTED (6): kserve's own parser already has --model_name, --predictor_host and --predictor_protocol.
parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
parser.add_argument("--transform", choices=sorted(TRANSFORMS), default="cifar10", help="ADAPTED (4)")
args, _ = parser.parse_known_args()

if __name__ == "__main__":
    transform = TRANSFORMS[args.transform]
    transformer = ImageTransformerV2(args.model_name, predictor_host=args.predictor_host, protocol=args.protocol)
    transformer.load()  # ADAPTED (5)
    server = kserve.ModelServer()  # ADAPTED (6)
    server.start(models=[transformer])
