# handler.py
# Copied on purpose from seed 004 (KServe's "PyTorch TorchServe Runtime" page, "Custom Handlers" ->
# "Creating Custom Handler"), the one piece of foreign code kept verbatim: kxform must serve it unchanged.
# The only change is marked FIX below. As printed, preprocess applied `self.image_processing` to the request
# row itself (a dict such as {"data": ...}, not an image) and then transformed the result again; that fails
# under TorchServe's own BaseHandler.handle too. The smallest fix that runs there: decode the row's image as
# TorchServe's VisionHandler.preprocess does (base64 text or raw bytes) and transform it once.
# ruff: noqa -- the seed's code stays as written (its style is not this repository's)
# fmt: off
import torch
from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier

import base64  # FIX
import io  # FIX
from PIL import Image  # FIX


class CustomImageHandler(ImageClassifier):
    def __init__(self):
        super(CustomImageHandler, self).__init__()

    def preprocess(self, data):
        """Custom preprocessing logic"""
        transform = transforms.Compose([
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406],
                               [0.229, 0.224, 0.225])
        ])

        images = []
        for row in data:
            # Custom image processing
            # FIX: was `image = self.image_processing(row)` then `transform(image)` on its result.
            image = row.get("data") or row.get("body")  # FIX
            if isinstance(image, str):  # FIX
                image = base64.b64decode(image)  # FIX
            image = Image.open(io.BytesIO(image))  # FIX
            images.append(transform(image))

        return torch.stack(images)

    def postprocess(self, output):
        """Custom postprocessing logic"""
        probabilities = torch.nn.functional.softmax(output, dim=1)
        top5_prob, top5_indices = torch.topk(probabilities, 5)

        results = []
        for i in range(len(output)):
            result = []
            for j in range(5):
                result.append({
                    "class": self.mapping[str(top5_indices[i][j].item())],
                    "probability": top5_prob[i][j].item()
                })
            results.append(result)
        return results
