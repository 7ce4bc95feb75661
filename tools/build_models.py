"""Build the example Triton model repository (``make models``), laid out as users upload it for KServe.

Most models are TorchScript (``<name>/1/model.pt``) with ``platform: "pytorch_libtorch"``, inputs
``INPUT__i`` and outputs ``OUTPUT__i`` as in the seeds. The PyTorch 2 examples: ``aoti_example`` is an
AOT Inductor package (``model.pt2``, ``platform: "torch_aoti"``) with dict inputs and outputs like the
seed's ``ExampleAotiModel``, named by its call spec (``ARGS[2][keyA]``, ``RESULT[BBB][0]``);
``aoti_example_ordinal`` is the same package named by ordinal (``INPUT__2``, ``OUTPUT__2``); and
``cifar10_pt2`` / ``cifar10_onnx`` are ``cifar10``'s network with its weights as a ``.pt2`` and as ONNX.
A ``.pt2`` takes a C++ compile (tens of seconds on 2 cores): it is rebuilt only when its source or the
torch version changes (a fingerprint in ``.kxform-build`` next to the model). No weights are downloaded: ``cifar10`` and
``resnet50`` use seeded random weights (only shapes matter), ``digits`` is trained here on
scikit-learn's bundled dataset, and ``text`` is a scripted hashed bag of words whose fixed weights
come from a small sentiment word list (it exercises the string I/O path, ``List[str]`` in).
``pooled`` (global average pooling of a [3, 224, 224] image, then a Linear(3, 10)) costs Triton
almost nothing, so that moving its 602 kB input per image is what a benchmark of it measures.
Generation is deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the name every PyTorch example uses
from torch import nn

# TorchScript is deprecated upstream, yet it is the format Triton's PyTorch backend serves (see the seeds).
warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGITS_SEED = 0
DIGITS_TEST_SIZE = 0.25  # sklearn.model_selection.train_test_split(..., random_state=0, stratify=y)


class Cifar10Net(nn.Module):
    """The seeds' CIFAR-10 network (conv 3->6->16, fc 120/84/10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class DigitsNet(nn.Module):
    """A small CNN for 1x8x8 grayscale digits with pixel values in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class PooledNet(nn.Module):
    """Global average pooling per channel, then Linear(3, 10): next to no compute per input byte."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


TEXT_BUCKETS = 1 << 16  # few collisions between everyday words and the word list
TEXT_LABELS = ["NEGATIVE", "POSITIVE"]  # OUTPUT__0 column order
TEXT_WORD_WEIGHT = 1.5  # two matching words: softmax(0, 3) = 0.95
POSITIVE_WORDS = [
    "amazing", "awesome", "beautiful", "best", "brilliant", "charming", "delightful", "enjoy", "enjoyable",
    "enjoyed", "excellent", "fantastic", "fine", "fun", "good", "great", "happy", "love", "loved", "lovely",
    "masterpiece", "nice", "perfect", "pleasant", "recommend", "superb", "wonderful",
]  # fmt: skip
NEGATIVE_WORDS = [
    "annoying", "awful", "bad", "boring", "broken", "disappointing", "dull", "hate", "hated", "horrible",
    "mediocre", "mess", "poor", "poorly", "ridiculous", "sad", "slow", "stupid", "terrible", "ugly",
    "unpleasant", "waste", "wasted", "weak", "worse", "worst",
]  # fmt: skip


def text_bucket(word: str, buckets: int) -> int:
    """FNV-1a over the word's characters, mod ``buckets``; TorchScript and Python compute the same value."""
    value = 2166136261
    for char in word:
        value = ((value ^ ord(char)) * 16777619) & 0xFFFFFFFF
    return value % buckets


def _is_word_char(char: str) -> bool:
    # ASCII only: TorchScript iterates a str by UTF-8 byte, Python by code point; both agree on ASCII
    # and both see every non-ASCII unit as above "z", i.e. as a separator.
    lower = char >= "a" and char <= "z"
    upper = char >= "A" and char <= "Z"
    digit = char >= "0" and char <= "9"
    return lower or upper or digit or char == "'"


def text_words(text: str) -> list[str]:
    """Lower-cased ASCII words (letters, digits, apostrophes) of ``text``; everything else separates them."""
    words: list[str] = []
    word = ""
    for char in text:
        if _is_word_char(char):
            word += char
        elif word != "":
            words.append(word.lower())
            word = ""
    if word != "":
        words.append(word.lower())
    return words


class HashedBagOfWords(nn.Module):
    """``List[str]`` -> logits [N, 2]: the sum of the weight rows of the text's hashed words."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.buckets = int(weight.shape[0])

    def forward(self, texts: list[str]) -> torch.Tensor:
        logits = torch.zeros(len(texts), self.weight.shape[1])
        for row, text in enumerate(texts):
            for word in text_words(text):
                logits[row] += self.weight[text_bucket(word, self.buckets)]
        return logits


def text_weights() -> torch.Tensor:
    """Column 1 (POSITIVE) gains for positive words, column 0 (NEGATIVE) for negative ones."""
    weight = torch.zeros(TEXT_BUCKETS, len(TEXT_LABELS))
    seen: dict[int, str] = {}
    for column, words in ((1, POSITIVE_WORDS), (0, NEGATIVE_WORDS)):
        for word in words:
            bucket = text_bucket(word, TEXT_BUCKETS)
            if bucket in seen:
                raise SystemExit(f"text model: '{word}' and '{seen[bucket]}' hash to bucket {bucket}; change a word")
            seen[bucket] = word
            weight[bucket, column] = TEXT_WORD_WEIGHT
    return weight


def config_text(name: str, inputs: str, outputs: str, max_batch_size: int, extra: str = "") -> str:
    return f"""name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: {max_batch_size}
input [
{inputs}
]
output [
{outputs}
]
dynamic_batching {{
  max_queue_delay_microseconds: 500
}}
instance_group [
  {{
    count: 1
    kind: KIND_CPU
  }}
]
# One intra-op thread, as the seeds' OMP_NUM_THREADS=1 advises: requests run in parallel instead.
parameters: {{
  key: "INTRA_OP_THREAD_COUNT"
  value: {{ string_value: "1" }}
}}
{extra}"""


def tensor_text(name: str, data_type: str, dims: list[int], label_filename: str = "") -> str:
    labels = f'\n    label_filename: "{label_filename}"' if label_filename else ""
    return f'  {{\n    name: "{name}"\n    data_type: {data_type}\n    dims: {dims}{labels}\n  }}'


def save_traced(module: nn.Module, example: torch.Tensor, model_dir: Path) -> None:
    module.eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, example)
    (model_dir / "1").mkdir(parents=True)
    traced.save(str(model_dir / "1" / "model.pt"))


def build_cifar10(model_dir: Path) -> None:
    torch.manual_seed(0)
    save_traced(Cifar10Net(), torch.rand(1, 3, 32, 32), model_dir)
    (model_dir / "labels.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n")
    (model_dir / "config.pbtxt").write_text(
        config_text(
            "cifar10",
            tensor_text("INPUT__0", "TYPE_FP32", [3, 32, 32]),
            tensor_text("OUTPUT__0", "TYPE_FP32", [10], "labels.txt"),
            max_batch_size=8,
        )
    )


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed train/held-out split of scikit-learn's digits: images as float32 [N,1,8,8] in [0,1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=DIGITS_TEST_SIZE, random_state=DIGITS_SEED, stratify=digits.target
    )
    return x_train, x_test, y_train, y_test


def train_digits() -> tuple[nn.Module, float]:
    x_train, x_test, y_train, y_test = digits_split()
    torch.manual_seed(DIGITS_SEED)
    net = DigitsNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    order = torch.Generator().manual_seed(DIGITS_SEED)
    for _epoch in range(30):
        for batch in torch.randperm(len(xs), generator=order).split(64):
            optimiser.zero_grad()
            F.cross_entropy(net(xs[batch]), ys[batch]).backward()
            optimiser.step()
    net.eval()
    with torch.no_grad():
        predicted = net(torch.from_numpy(x_test)).argmax(1).numpy()
    return net, float((predicted == y_test).mean())


def build_digits(model_dir: Path) -> None:
    net, accuracy = train_digits()
    print(f"  digits: held-out accuracy {accuracy:.4f} on {len(digits_split()[3])} images")
    if accuracy < 0.95:
        raise SystemExit(f"digits model reached only {accuracy:.2%} held-out accuracy (< 95%)")
    save_traced(net, torch.rand(1, 1, 8, 8), model_dir)
    (model_dir / "labels.txt").write_text("\n".join(str(d) for d in range(10)) + "\n")
    (model_dir / "config.pbtxt").write_text(
        config_text(
            "digits",
            tensor_text("INPUT__0", "TYPE_FP32", [1, 8, 8]),
            tensor_text("OUTPUT__0", "TYPE_FP32", [10], "labels.txt"),
            max_batch_size=64,
        )
    )


def build_resnet50(model_dir: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    save_traced(net, torch.rand(1, 3, 224, 224), model_dir)
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    (model_dir / "labels.txt").write_text("\n".join(categories) + "\n")
    (model_dir / "config.pbtxt").write_text(
        config_text(
            "resnet50",
            tensor_text("INPUT__0", "TYPE_FP32", [3, 224, 224]),
            tensor_text("OUTPUT__0", "TYPE_FP32", [1000], "labels.txt"),
            max_batch_size=8,
            extra='parameters: {\n  key: "INFERENCE_MODE"\n  value: { string_value: "true" }\n}\n',
        )
    )


def build_pooled(model_dir: Path) -> None:
    torch.manual_seed(0)
    save_traced(PooledNet(), torch.rand(1, 3, 224, 224), model_dir)
    # No label file: its outputs are logits of nothing in particular (the tensor plugin returns them as they are).
    (model_dir / "config.pbtxt").write_text(
        config_text(
            "pooled",
            tensor_text("INPUT__0", "TYPE_FP32", [3, 224, 224]),
            tensor_text("OUTPUT__0", "TYPE_FP32", [10]),
            max_batch_size=8,
        )
    )


class AotiExample(nn.Module):
    """The seed's ``ExampleAotiModel`` (dict in, nested dict out), FP32, with a little arithmetic of its own."""

    def forward(
        self,
        hdata: torch.Tensor,
        vdata: torch.Tensor,
        options: dict[str, torch.Tensor],
        *,
        kwarg1: torch.Tensor,
        kw_arg2: torch.Tensor,
    ) -> dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]]:
        return {
            "AAA": hdata + vdata,  # OUTPUT__0
            "ZZZ": hdata - vdata,  # OUTPUT__1: ordinals follow the dict's order, not the alphabet
            "BBB": (hdata * vdata, torch.relu(hdata)),  # OUTPUT__2, OUTPUT__3
            "CCC": {"keyA": options["keyA"] * 2, "key2": options["key2"] + vdata},  # OUTPUT__4, OUTPUT__5
            "DDD": {"KA": kwarg1.cumsum(-1), "KB": kw_arg2 * kwarg1},  # OUTPUT__6, OUTPUT__7
        }


AOTI_SHAPE = (1, 16)  # batch 1: Triton's PyTorch backend does not batch .pt2 models yet
AOTI_INPUTS = ["ARGS[0]", "ARGS[1]", "ARGS[2][keyA]", "ARGS[2][key2]", "KWARGS[kwarg1]", "KWARGS[kw_arg2]"]
AOTI_OUTPUTS = [
    "RESULT[AAA]",
    "RESULT[ZZZ]",
    "RESULT[BBB][0]",
    "RESULT[BBB][1]",
    "RESULT[CCC][keyA]",
    "RESULT[CCC][key2]",
    "RESULT[DDD][KA]",
    "RESULT[DDD][KB]",
]


def aoti_config(
    name: str, inputs: list[str], outputs: list[tuple[str, list[int]]], dims: list[int], max_batch_size: int
) -> str:
    """A ``torch_aoti`` config (``backend`` + ``platform``, as the seed writes it), one CPU instance."""
    input_text = ",\n".join(tensor_text(n, "TYPE_FP32", dims) for n in inputs)
    output_text = ",\n".join(tensor_text(n, "TYPE_FP32", d) for n, d in outputs)
    return (
        f'name: "{name}"\nbackend: "pytorch"\nplatform: "torch_aoti"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{input_text}\n]\noutput [\n{output_text}\n]\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )


def compile_pt2(module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object], target: Path) -> None:
    """torch.export, then AOT Inductor compile and package: the README's two steps."""
    exported = torch.export.export(module.eval(), args=args, kwargs=kwargs)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch._inductor.aoti_compile_and_package(exported, package_path=str(target))


def build_aoti_example(model_dir: Path) -> None:
    sample = [torch.zeros(AOTI_SHAPE) for _ in range(6)]
    args = (sample[0], sample[1], {"keyA": sample[2], "key2": sample[3]})
    compile_pt2(AotiExample(), args, {"kwarg1": sample[4], "kw_arg2": sample[5]}, model_dir / "1" / "model.pt2")
    dims = [AOTI_SHAPE[1]]
    (model_dir / "config.pbtxt").write_text(
        aoti_config("aoti_example", AOTI_INPUTS, [(n, dims) for n in sorted(AOTI_OUTPUTS)], dims, max_batch_size=1)
    )
    # The same package named by ordinal: INPUT__i / OUTPUT__i in the call spec's order.
    ordinal = model_dir.parent / "aoti_example_ordinal"
    shutil.rmtree(ordinal, ignore_errors=True)
    (ordinal / "1").mkdir(parents=True)
    shutil.copyfile(model_dir / "1" / "model.pt2", ordinal / "1" / "model.pt2")
    inputs = [f"INPUT__{i}" for i in range(len(AOTI_INPUTS))]
    outputs = [(f"OUTPUT__{i}", dims) for i in range(len(AOTI_OUTPUTS))]
    (ordinal / "config.pbtxt").write_text(aoti_config("aoti_example_ordinal", inputs, outputs, dims, max_batch_size=1))


def cifar10_net() -> nn.Module:
    """``cifar10``'s network with the same seeded weights, for its .pt2 and ONNX twins."""
    torch.manual_seed(0)
    return Cifar10Net().eval()


def build_cifar10_pt2(model_dir: Path) -> None:
    compile_pt2(cifar10_net(), (torch.rand(1, 3, 32, 32),), {}, model_dir / "1" / "model.pt2")
    (model_dir / "labels.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n")
    config = aoti_config("cifar10_pt2", ["INPUT__0"], [("OUTPUT__0", [10])], [3, 32, 32], max_batch_size=1)
    (model_dir / "config.pbtxt").write_text(
        config.replace("dims: [10]", 'dims: [10]\n    label_filename: "labels.txt"')
    )


def build_cifar10_onnx(model_dir: Path) -> None:
    (model_dir / "1").mkdir(parents=True)
    # The TorchScript-based exporter: the dynamo one would need onnxscript for the same graph.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            cifar10_net(),
            (torch.rand(1, 3, 32, 32),),
            str(model_dir / "1" / "model.onnx"),
            input_names=["INPUT__0"],
            output_names=["OUTPUT__0"],
            dynamic_axes={"INPUT__0": {0: "batch"}, "OUTPUT__0": {0: "batch"}},
            dynamo=False,
        )
    (model_dir / "labels.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n")
    text = config_text(
        "cifar10_onnx",
        tensor_text("INPUT__0", "TYPE_FP32", [3, 32, 32]),
        tensor_text("OUTPUT__0", "TYPE_FP32", [10], "labels.txt"),
        max_batch_size=8,
    )
    # ONNX Runtime's own keys for its thread pools (the PyTorch backend's do not apply).
    text = text.replace('platform: "pytorch_libtorch"', 'platform: "onnxruntime_onnx"')
    (model_dir / "config.pbtxt").write_text(text.replace("INTRA_OP_THREAD_COUNT", "intra_op_thread_count"))


def build_text(model_dir: Path) -> None:
    scripted = torch.jit.script(HashedBagOfWords(text_weights()))
    (model_dir / "1").mkdir(parents=True)
    scripted.save(str(model_dir / "1" / "model.pt"))
    (model_dir / "labels.txt").write_text("\n".join(TEXT_LABELS) + "\n")
    # One string per batch row (dims [1]): Triton's PyTorch backend hands a batch of them to forward
    # as one List[str] in request order, so the dynamic batcher can merge requests as for tensors.
    (model_dir / "config.pbtxt").write_text(
        config_text(
            "text",
            tensor_text("INPUT__0", "TYPE_STRING", [1]),
            tensor_text("OUTPUT__0", "TYPE_FP32", [2], "labels.txt"),
            max_batch_size=64,
        )
    )


BUILDERS: dict[str, Callable[[Path], None]] = {
    "aoti_example": build_aoti_example,
    "cifar10": build_cifar10,
    "cifar10_onnx": build_cifar10_onnx,
    "cifar10_pt2": build_cifar10_pt2,
    "digits": build_digits,
    "pooled": build_pooled,
    "resnet50": build_resnet50,
    "text": build_text,
}

# Models whose build is slow enough to reuse, with everything their result depends on.
CACHED: dict[str, tuple[object, ...]] = {
    "aoti_example": (AotiExample, build_aoti_example, aoti_config, tensor_text, compile_pt2, AOTI_SHAPE, AOTI_INPUTS),
    "cifar10_pt2": (Cifar10Net, cifar10_net, build_cifar10_pt2, aoti_config, tensor_text, compile_pt2),
}
FINGERPRINT_FILE = ".kxform-build"
COMPANIONS = {"aoti_example": ("aoti_example_ordinal",)}  # written by the same build


def fingerprint(name: str) -> str:
    """A hash of the model's sources (classes, builders, constants) and the torch version."""
    digest = hashlib.sha256(torch.__version__.encode())
    for part in CACHED[name]:
        source = inspect.getsource(part) if inspect.isclass(part) or inspect.isfunction(part) else repr(part)
        digest.update(source.encode())
    digest.update(repr(AOTI_OUTPUTS).encode() + repr(CIFAR10_CLASSES).encode())
    return digest.hexdigest()


def up_to_date(name: str, target: Path) -> bool:
    stamp = target / FINGERPRINT_FILE
    companions = all((target.parent / other / "config.pbtxt").exists() for other in COMPANIONS.get(name, ()))
    return name in CACHED and companions and stamp.exists() and stamp.read_text().strip() == fingerprint(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--only", nargs="*", choices=sorted(BUILDERS), default=sorted(BUILDERS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # deterministic training, and 2 cores are all there is
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        started = time.perf_counter()
        target = args.out / name
        if up_to_date(name, target):
            print(f"  {name}: up to date (same source and torch {torch.__version__}) -> {target}")
            continue
        shutil.rmtree(target, ignore_errors=True)
        BUILDERS[name](target)
        if name in CACHED:
            (target / FINGERPRINT_FILE).write_text(fingerprint(name) + "\n")
        print(f"  {name}: built in {time.perf_counter() - started:.1f}s -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
