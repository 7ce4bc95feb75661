"""``kxform new NAME``: write a plugin package that installs, serves and passes its own tests at once.

The package (``NAME/``): ``pyproject.toml`` with the ``kxform.transformers`` entry point, ``src/MODULE/__init__.py``
with the ``Transformer``, ``tests/`` that use kxform's pytest plugin (unit tests on ``MockPredictor``, integration
tests on the real Triton), ``README.md`` with a curl line, and the ``example-request.json`` it sends.

Given ``--model-repository DIR --model M``, the plugin is derived from ``DIR/M/config.pbtxt``:

- one FP32 input of 3 dims whose first or last is 3 or 1 (an image, CHW or HWC) → ``kxform.codecs.ImagePipeline``
  resized to the config's height and width; clients send encoded images (V2: one BYTES element each);
- one BYTES (``TYPE_STRING``) input → text (``kxform.codecs.text.text_bytes``);
- anything else → each instance is nested lists of the input's shape (several inputs: ``{name: nested list}``).

Outputs with a ``label_filename`` get a ``class`` (the label of the largest score) beside their scores.
Without a model the plugin is the nested-list kind for a model named NAME with one FP32 input and output.
"""

from __future__ import annotations

import importlib.util
import json
import keyword
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kxform.errors import KxformError
from kxform.spec import ModelSpec, TensorSpec

__all__ = ["Scaffold", "ScaffoldError", "create_plugin", "model_from_repository", "plan_plugin"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*$")
EXAMPLE_FILE = "example-request.json"


class ScaffoldError(KxformError):
    """``kxform new`` cannot write the package: a bad name, an existing directory, an unreadable model config."""


@dataclass(frozen=True, slots=True)
class Scaffold:
    """What ``kxform new`` writes: the package's files by relative path, and the names it chose."""

    name: str  # distribution and entry-point name
    module: str
    class_name: str
    kind: str  # "image", "text" or "tensor"
    files: dict[str, str]


def check_name(name: str) -> str:
    """``name`` as the module it becomes (``my-plugin`` → ``my_plugin``); a name that cannot be one raises why."""
    if not _NAME.match(name):
        raise ScaffoldError(
            f"'{name}' cannot name a plugin package: use letters and digits, starting with a letter, "
            "optionally joined by single '-' or '_' (e.g. my-model or my_model)"
        )
    module = name.replace("-", "_").lower()
    if keyword.iskeyword(module) or module in {"kxform", "test", "tests"}:
        raise ScaffoldError(f"'{name}' would make the module '{module}', which Python or kxform reserves; pick another")
    if importlib.util.find_spec(module) is not None:
        raise ScaffoldError(
            f"'{name}' would make the module '{module}', but one of that name is importable already "
            "(installed or in the current directory); pick another name"
        )
    return module


# --- reading the model ----------------------------------------------------------------------------------


def model_from_repository(repository: Path, model: str) -> ModelSpec:
    """The model's spec from ``repository/model/config.pbtxt`` (labels: placeholders, one per class)."""
    from kxform.codecs.dtypes import config_datatype_to_v2
    from kxform.triton.repository import read_model_config

    path = repository / model / "config.pbtxt"
    if not path.is_file():
        known = ", ".join(sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))) or "none"
        raise ScaffoldError(f"no {path}: --model must name a model of --model-repository {repository} (has: {known})")
    config = read_model_config(path)
    pb2 = _data_type_names()

    def tensor(entry: Any) -> TensorSpec:
        return TensorSpec(entry.name, config_datatype_to_v2(pb2(entry.data_type)), tuple(int(d) for d in entry.dims))

    outputs = tuple(tensor(entry) for entry in config.output)
    labels = {
        entry.name: tuple(f"class-{i}" for i in range(max(1, _elements(tensor(entry).shape))))
        for entry in config.output
        if entry.label_filename
    }
    if not config.input or not outputs:
        raise ScaffoldError(f"{path} declares no input or no output; kxform new needs both to write a plugin")
    return ModelSpec(model, "1", tuple(tensor(e) for e in config.input), outputs, int(config.max_batch_size), labels)


def _data_type_names() -> Callable[[int], str]:
    from kxform.model_config import model_config_pb2

    enum = model_config_pb2().DataType
    return lambda value: str(enum.Name(value))


def _elements(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= max(1, d)
    return count


def _default_model(name: str) -> ModelSpec:
    return ModelSpec(name, "1", (TensorSpec("INPUT__0", "FP32", (4,)),), (TensorSpec("OUTPUT__0", "FP32", (2,)),), 8)


def kind_of(spec: ModelSpec) -> str:
    if len(spec.inputs) == 1:
        tensor = spec.inputs[0]
        if tensor.datatype == "BYTES":
            return "text"
        if tensor.datatype == "FP32" and len(tensor.shape) == 3 and _channels(tensor.shape) is not None:
            return "image"
    return "tensor"


def _channels(shape: tuple[int, ...]) -> tuple[int, bool] | None:
    """(channels, channels-last) of an image-like shape, or None."""
    if shape[0] in (1, 3):
        return shape[0], False
    if shape[-1] in (1, 3):
        return shape[-1], True
    return None


# --- writing the package --------------------------------------------------------------------------------


def plan_plugin(name: str, spec: ModelSpec | None, repository_from_package: str | None) -> Scaffold:
    """The files of the package for ``name`` in front of ``spec`` (None: a model named ``name``)."""
    module = check_name(name)
    class_name = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    model = spec or _default_model(name)
    kind = kind_of(model)
    code = _Code(name, class_name, model, kind)
    files = {
        "pyproject.toml": _pyproject(name, module, class_name, model, repository_from_package),
        f"src/{module}/__init__.py": code.module(),
        f"src/{module}/py.typed": "",
        f"tests/test_{module}.py": code.tests(module),
        "README.md": _readme(name, model, kind, repository_from_package),
        EXAMPLE_FILE: json.dumps(code.example_body()) + "\n",
    }
    return Scaffold(name, module, class_name, kind, files)


def create_plugin(
    name: str, directory: Path | None = None, repository: Path | None = None, model: str | None = None
) -> Scaffold:
    """Write the package for ``name`` into ``directory`` (default ``./NAME``), which must not exist yet."""
    if (repository is None) != (model is None):
        raise ScaffoldError("--model-repository and --model go together: pass both, or neither")
    target = (directory or Path(name)).resolve()
    if target.exists():
        raise ScaffoldError(f"{target} exists already; kxform new never overwrites: pick another --dir or name")
    check_name(name)
    spec = model_from_repository(repository, model) if repository is not None and model is not None else None
    relative = os.path.relpath(repository.resolve(), target) if repository is not None else None
    scaffold = plan_plugin(name, spec, relative)
    for path, text in scaffold.files.items():
        file = target / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    return scaffold


def _pyproject(name: str, module: str, class_name: str, model: ModelSpec, repository: str | None) -> str:
    lines = [
        f"# The kxform plugin {name!r} for the Triton model {model.name!r}, as `kxform new` wrote it.",
        "[build-system]",
        'requires = ["setuptools>=77"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f'name = "{name}"',
        'version = "0.1.0"',
        f'description = "kxform transformer in front of the Triton model {model.name}"',
        'readme = "README.md"',
        'requires-python = ">=3.11"',
        'dependencies = ["kxform"]',
        "",
        "[project.optional-dependencies]",
        "# pytest runs the tests; kxform's pytest plugin (its fixtures) comes with kxform itself.",
        'test = ["pytest", "pytest-asyncio"]',
        "",
        '[project.entry-points."kxform.transformers"]',
        f'{name} = "{module}:{class_name}"',
        "",
        "[tool.setuptools.package-data]",
        f'{module} = ["py.typed"]',
        "",
        "[tool.ruff]",
        "line-length = 120",
        'src = ["src"]',
        "",
        "[tool.pytest.ini_options]",
        'testpaths = ["tests"]',
        'asyncio_mode = "auto"',
        'asyncio_default_fixture_loop_scope = "function"',
    ]
    if repository is not None:
        lines += [
            "# The model repository the integration tests' Triton serves (relative to this file);",
            "# pytest --kxform-model-repository DIR or $KXFORM_MODEL_REPOSITORY overrides it.",
            f'kxform_model_repository = "{repository}"',
        ]
    return "\n".join(lines) + "\n"


def _readme(name: str, model: ModelSpec, kind: str, repository: str | None) -> str:
    what = {
        "image": "images (PNG, JPEG, ...; base64 in JSON, raw bytes in V2 binary requests)",
        "text": "strings",
        "tensor": "nested lists of numbers",
    }[kind]
    models = repository or "MODEL_REPOSITORY"
    return f"""# {name}

A [kxform](https://github.com/) transformer in front of the Triton model `{model.name}`, written by `kxform new`.
Clients send {what}; `src/` turns them into the model's tensors and its outputs into replies.

## Develop

```bash
pip install -e '.[test]'     # then `kxform plugins` lists {name}
pytest                       # unit tests on kxform.testing.MockPredictor; integration tests on a real Triton
```

The integration tests start Triton on `{models}` (`kxform_model_repository` in pyproject.toml; or
`pytest --kxform-model-repository DIR`).

## Serve

```bash
kxform triton --model-repository {models} &
kxform serve --transformer {name} --predictor_host 127.0.0.1:8000 --http_port 8080
```

From this directory:

```bash
curl -s http://127.0.0.1:8080/v1/models/{name}:predict -d @{EXAMPLE_FILE}
```
"""


@dataclass(frozen=True, slots=True)
class _Code:
    """The Python source of the plugin module and of its tests, for one kind of model."""

    name: str
    class_name: str
    model: ModelSpec
    kind: str

    # -- shared pieces

    def _tensor_literal(self, tensor: TensorSpec) -> str:
        return f'kxform.TensorSpec("{tensor.name}", "{tensor.datatype}", {tensor.shape!r})'

    def _dims(self, tensor: TensorSpec) -> tuple[int, ...]:
        """The tensor's shape with dynamic axes (-1) made 1: a concrete example."""
        return tuple(max(1, d) for d in tensor.shape)

    def _image_size(self) -> tuple[int, int, int, bool]:
        shape = self.model.inputs[0].shape
        found = _channels(shape)
        assert found is not None
        channels, last = found
        height, width = (shape[0], shape[1]) if last else (shape[1], shape[2])
        return channels, height, width, last

    def _example_size(self) -> tuple[int, int]:
        """The example image's height and width: the model's, or 32x32 where it takes any size."""
        _, height, width, _ = self._image_size()
        return (height if height > 0 else 32), (width if width > 0 else 32)

    def _labelled(self) -> list[TensorSpec]:
        return [tensor for tensor in self.model.outputs if tensor.name in self.model.labels]

    def _class_key(self, tensor: TensorSpec) -> str:
        return "class" if len(self._labelled()) == 1 else f"{tensor.name}_class"

    def _declared_inputs(self) -> list[str]:
        if self.kind == "image":
            return ['kxform.TensorSpec("image", "BYTES", ())']
        if self.kind == "text":
            return ['kxform.TensorSpec("text", "BYTES", ())']
        return [self._tensor_literal(self.model.inputs[0])]

    def _declared_outputs(self) -> list[str]:
        outputs = [self._tensor_literal(tensor) for tensor in self.model.outputs]
        outputs += [f'kxform.TensorSpec("{self._class_key(t)}", "BYTES", ())' for t in self._labelled()]
        return outputs

    def example_instance(self) -> Any:
        if self.kind == "image":
            from kxform.codecs import encode_b64_image

            return {"image_bytes": {"b64": encode_b64_image(self._example_pixels())}}
        if self.kind == "text":
            return "kxform turns this sentence into the model's input"
        if len(self.model.inputs) == 1:
            return _nested_zeros(self._dims(self.model.inputs[0]))
        return {tensor.name: _nested_zeros(self._dims(tensor)) for tensor in self.model.inputs}

    def _example_pixels(self) -> Any:
        import numpy as np

        channels = self._image_size()[0]
        height, width = self._example_size()
        gradient = np.linspace(0, 255, height * width, dtype=np.float64).reshape(height, width).astype(np.uint8)
        return gradient if channels == 1 else np.stack([gradient] * 3, axis=-1)

    def example_body(self) -> dict[str, Any]:
        return {"instances": [self.example_instance()]}

    # -- the plugin module

    def module(self) -> str:
        model = self.model
        title = f"The kxform plugin '{self.name}': requests for the Triton model '{model.name}' ({self.kind} input)."
        header = f'''"""{title}

Written by `kxform new`; edit it freely. kxform decodes each request into ``instances``, calls ``preprocess``, checks
the result against the model's input (names, dtype, shape: a mismatch is a 400 naming it), sends it to Triton in
batches, and hands ``postprocess`` the outputs shaped [batch, *dims]. docs/plugins.md in kxform describes it all.
"""

from __future__ import annotations

from typing import Any

import kxform
import numpy as np
import numpy.typing as npt
'''
        body = {"image": self._image_module, "text": self._text_module, "tensor": self._tensor_module}[self.kind]()
        return header + body + self._postprocess_source()

    def _class_open(self, doc: str) -> str:
        inputs = ",\n        ".join(self._declared_inputs())
        outputs = ",\n        ".join(self._declared_outputs())
        return f'''

class {self.class_name}(kxform.Transformer):
    """{doc}"""

    predictor_model = "{self.model.name}"
    inputs = (  # what V2 clients send this transformer
        {inputs},
    )
    outputs = (  # what V2 clients get back (GET /v2/models/{self.name} lists both)
        {outputs},
    )
'''

    def _image_module(self) -> str:
        channels, height, width, last = self._image_size()
        mode = "RGB" if channels == 3 else "L"
        resize = f"resize=({height}, {width}), " if height > 0 and width > 0 else ""
        layout = "return batch.transpose(0, 2, 3, 1)  # the model takes H x W x C" if last else "return batch"
        fill = "np.stack([gradient] * 3, axis=-1)" if channels == 3 else "gradient"
        example_height, example_width = self._example_size()
        return (
            f'''from kxform.codecs import ImagePipeline, encode_b64_image

# Each image: decoded, converted to {mode}, resized to the model's {height}x{width}, scaled to [0, 1] (ToTensor).
# Add mean=(...), std=(...) for the Normalize your model was trained with.
PIPELINE = ImagePipeline(mode="{mode}", {resize}dtype=np.float32)
'''
            + self._class_open(
                "Instances are images: image_bytes.b64, image.b64, a base64 string, raw bytes (V2: BYTES elements)."
            )
            + f'''
    def example_request(self) -> dict[str, Any]:
        """One grey gradient image (kxform dev prints it as a curl line)."""
        gradient = np.linspace(0, 255, {example_height * example_width}).reshape({example_height}, {example_width})
        pixels = {fill}.astype(np.uint8)
        return {{"instances": [{{"image_bytes": {{"b64": encode_b64_image(pixels)}}}}]}}

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        batch = PIPELINE.batch(instances)  # N x C x H x W; a bad instance is a 400 naming it
        {layout}
'''
        )

    def _text_module(self) -> str:
        dims = self.model.inputs[0].shape
        reshape = "texts.reshape(-1, 1)" if len(dims) == 1 else "texts"
        return (
            """from kxform.codecs.text import text_bytes
"""
            + self._class_open("Instances are strings (or objects with a text member); V2 clients send BYTES elements.")
            + f'''
    def example_request(self) -> dict[str, Any]:
        """One sentence (kxform dev prints it as a curl line)."""
        return {{"instances": ["kxform turns this sentence into the model's input"]}}

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
        texts = np.array([text_bytes(text, f"instances[{{i}}]") for i, text in enumerate(instances)], dtype=np.object_)
        return {reshape}
'''
        )

    def _tensor_module(self) -> str:
        inputs = self.model.inputs
        if len(inputs) == 1:
            example = f'{{"instances": [np.zeros({self._dims(inputs[0])!r}).tolist()]}}'
        else:
            rows = ", ".join(f'"{t.name}": np.zeros({self._dims(t)!r}).tolist()' for t in inputs)
            example = f'{{"instances": [{{{rows}}}]}}'
        if len(inputs) == 1:
            tensor = inputs[0]
            dtype = _dtype_source(tensor)
            prepare = f"""        try:
            return np.asarray(instances, dtype={dtype})
        except (ValueError, TypeError) as exc:
            shape = {list(self._dims(tensor))}
            raise kxform.RequestError(f"instances must each be nested lists of shape {{shape}} ({{exc}})") from exc
"""
            doc = f"Instances are nested lists of shape {list(tensor.shape)}; V2 clients send the tensor itself."
        else:
            names = ", ".join(f'"{t.name}"' for t in inputs)
            prepare = f"""        arrays = {{}}
        for name in ({names},):
            try:
                rows = [instance[name] for instance in instances]
                arrays[name] = np.asarray(rows, dtype=numpy_dtype(ctx.model.input(name).datatype))
            except (KeyError, TypeError, ValueError) as exc:
                raise kxform.RequestError(
                    f"instances must each be {{{{input name: nested list}}}} with '{{name}}' ({{exc}})"
                ) from exc
        return arrays
"""
            doc = "Instances are {input name: nested list} for each of the model's inputs (V1)."
        imports = "from kxform.codecs import numpy_dtype\n" if len(inputs) > 1 else ""
        return (
            imports
            + self._class_open(doc)
            + f'''
    def example_request(self) -> dict[str, Any]:
        """Zeros of the input's shape (kxform dev prints it as a curl line)."""
        return {example}

    def preprocess(self, instances: list[Any], ctx: kxform.Context) -> Any:
{prepare}'''
        )

    def _postprocess_source(self) -> str:
        lines = [
            "",
            "    def postprocess(self, outputs: dict[str, npt.NDArray[Any]], ctx: kxform.Context) -> Any:",
            "        replies: dict[str, npt.NDArray[Any]] = dict(outputs)",
        ]
        for tensor in self._labelled():
            lines += [
                f'        scores = outputs["{tensor.name}"].reshape(len(outputs["{tensor.name}"]), -1)',
                f'        labels = ctx.labels("{tensor.name}")  # the model\'s label file, through Triton',
                "        best = scores.argmax(axis=1)",
                f'        replies["{self._class_key(tensor)}"] = '
                "np.array([labels[int(i)] for i in best], dtype=np.object_)",
            ]
        lines += [
            '        if ctx.protocol == "v2":',
            "            return replies  # one tensor each",
            "        return [  # V1: one dict per instance",
            "            {name: _jsonable(array[row]) for name, array in replies.items()}",
            "            for row in range(len(next(iter(replies.values()))))",
            "        ]",
            "",
            "",
            "def _jsonable(value: Any) -> Any:",
            '    """A row of an output as JSON can carry it."""',
            "    if isinstance(value, np.ndarray):",
            "        return [_jsonable(v) for v in value] if value.dtype == np.object_ else value.tolist()",
            "    if isinstance(value, bytes):",
            '        return value.decode("utf-8", "replace")',
            '    return value.item() if hasattr(value, "item") else value',
            "",
        ]
        return "\n".join(lines)

    # -- the tests

    def tests(self, module: str) -> str:
        model = self.model
        inputs = ", ".join(self._tensor_literal(t) for t in model.inputs)
        outputs = ", ".join(self._tensor_literal(t) for t in model.outputs)
        labels = ", ".join(
            f'"{t.name}": tuple(f"class-{{i}}" for i in range({len(model.labels[t.name])}))' for t in self._labelled()
        )
        answers = ",\n        ".join(self._answer(t) for t in model.outputs)
        first = model.inputs[0]
        batch_shape = "(1, *example_shape)" if model.batched else "example_shape"
        title = f"Tests of the '{self.name}' plugin: unit tests on an in-memory predictor, integration tests on Triton."
        return f'''"""{title}

The unit tests need neither Triton nor torch: ``MockPredictor`` answers from SPEC (what Triton says of the model)
and ``model`` (a stand-in computation). The integration tests (``-m integration``) run the plugin in a real
``kxform serve`` in front of a real Triton (kxform's pytest fixtures ``kxform_serve`` and ``predictor``).
"""

from __future__ import annotations

{"import base64" + chr(10) if self.kind == "image" else ""}import json
from pathlib import Path
from typing import Any

import kxform
import numpy as np
import pytest
from kxform.testing import MockPredictor, TransformerRunner, readme_curl_lines, run_readme_curl

from {module} import {self.class_name}

PACKAGE = Path(__file__).resolve().parents[1]
SPEC = kxform.ModelSpec(
    "{model.name}",
    "1",
    ({inputs},),
    ({outputs},),
    {model.max_batch_size},
    {{{labels}}},
)
EXAMPLE = {self.class_name}().example_request()["instances"]
V2_INPUT = {{{self._v2_input()}}}


def model(inputs: dict[str, Any]) -> dict[str, Any]:
    """Stand-in for the Triton model: every output counts up from 0, so the last class always scores highest."""
    rows = len(inputs["{first.name}"]) if SPEC.batched else 1
    return {{
        {answers},
    }}


@pytest.fixture
def mock() -> MockPredictor:
    return MockPredictor(SPEC, model)


@pytest.fixture
def runner(mock: MockPredictor) -> TransformerRunner:
    return TransformerRunner("{self.name}", mock)


async def test_preprocess_makes_the_models_input(runner: TransformerRunner, mock: MockPredictor) -> None:
    await runner.v1(EXAMPLE)

    (call,) = mock.calls
    example_shape = tuple(max(1, d) for d in SPEC.input("{first.name}").shape)
    assert call["{first.name}"].shape == {batch_shape}


async def test_each_instance_gets_one_reply_with_every_output(runner: TransformerRunner) -> None:
    predictions = await runner.v1(EXAMPLE * 3)

    assert len(predictions) == 3
    assert set(predictions[0]) == {{spec.name for spec in {self.class_name}.outputs}}
{self._label_assertion()}

async def test_an_instance_that_is_not_{self.kind}_is_a_400_naming_it(runner: TransformerRunner) -> None:
    with pytest.raises(kxform.RequestError) as caught:
        await runner.v1([*EXAMPLE, {self._bad_instance()}])

    assert caught.value.http_status == 400
    assert "instances" in caught.value.message


@pytest.mark.integration
def test_v1_against_the_real_triton(kxform_serve: Any) -> None:
    predictions = kxform_serve("{self.name}").v1(EXAMPLE * 2).predictions

    assert len(predictions) == 2
    assert set(predictions[0]) == {{spec.name for spec in {self.class_name}.outputs}}


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["v2", "grpc"])
def test_v2_and_grpc_clients_get_the_declared_outputs(kxform_serve: Any, protocol: str) -> None:
    server = kxform_serve("{self.name}")

    outputs = getattr(server, protocol)(V2_INPUT)

    assert set(outputs) == {{spec.name for spec in {self.class_name}.outputs}}


@pytest.mark.integration
async def test_in_process_on_the_real_triton_gives_the_served_reply(kxform_serve: Any, predictor: Any) -> None:
    served = kxform_serve("{self.name}").v1(EXAMPLE).predictions

    in_process = await TransformerRunner("{self.name}", predictor).v1(EXAMPLE)

    assert json.loads(json.dumps(in_process)) == served


@pytest.mark.integration
@pytest.mark.parametrize("line", readme_curl_lines(PACKAGE / "README.md"))
def test_the_readmes_curl_line_works_as_printed(kxform_serve: Any, line: str) -> None:
    stdout = run_readme_curl(line, kxform_serve("{self.name}"), PACKAGE)

    assert len(json.loads(stdout)["predictions"]) == 1
'''

    def _answer(self, tensor: TensorSpec) -> str:
        dims = self._dims(tensor)
        shape = f"(rows, {', '.join(map(str, dims))})" if self.model.batched else repr(dims)
        if tensor.datatype == "BYTES":
            return f'"{tensor.name}": np.full({shape}, b"answer", dtype=np.object_)'
        count = _elements(dims)
        return f'"{tensor.name}": np.broadcast_to(np.arange({count}).reshape({dims!r}), {shape})'

    def _label_assertion(self) -> str:
        lines = []
        for tensor in self._labelled():
            last = len(self.model.labels[tensor.name]) - 1
            key = self._class_key(tensor)
            lines.append(f'    assert predictions[0]["{key}"] == "class-{last}"  # the label of the largest score')
        return "\n".join(lines) + ("\n" if lines else "")

    def _bad_instance(self) -> str:
        if self.kind == "image":
            return '{"image_bytes": {"b64": base64.b64encode(b"plain text, not an image").decode()}}'
        if self.kind == "text":
            return "12345"
        if len(self.model.inputs) == 1:
            return '"not numbers"'
        return '{"no such input": []}'

    def _v2_input(self) -> str:
        if self.kind == "image":
            return '"image": np.array([base64.b64decode(EXAMPLE[0]["image_bytes"]["b64"])], dtype=np.object_)'
        if self.kind == "text":
            return '"text": np.array([EXAMPLE[0].encode()], dtype=np.object_)'
        tensor = self.model.inputs[0]
        return f'"{tensor.name}": np.asarray(EXAMPLE, dtype={_dtype_source(tensor)})'


def _dtype_source(tensor: TensorSpec) -> str:
    """The numpy dtype of a tensor as source code (a string numpy reads: no numpy version's aliases)."""
    from kxform.codecs.dtypes import numpy_dtype

    return "np.object_" if tensor.datatype == "BYTES" else json.dumps(numpy_dtype(tensor.datatype).name)


def _nested_zeros(shape: tuple[int, ...]) -> Any:
    if not shape:
        return 0
    return [_nested_zeros(shape[1:]) for _ in range(shape[0])]
