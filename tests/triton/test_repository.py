"""Deriving a Python-backend repository from a user's TorchScript repository (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

import kxform
from kxform.errors import TritonServerError
from kxform.triton.formats import KXFORM_PATH_PARAMETER, MODEL_FILE_PARAMETER, MODEL_FORMAT_PARAMETER
from kxform.triton.repository import ADAPTER_SOURCE, derive_repository, read_model_config

TORCHSCRIPT_CONFIG = """
name: "cifar"
platform: "pytorch_libtorch"
max_batch_size: 8
default_model_filename: "weights.pt"
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [3, 32, 32] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [10] label_filename: "labels.txt" } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
instance_group [ { count: 3 kind: KIND_GPU gpus: [0] } ]
parameters: { key: "INFERENCE_MODE" value: { string_value: "false" } }
"""

PYTHON_CONFIG = 'name: "echo"\nbackend: "python"\nmax_batch_size: 0\n'


def write_model(repo: Path, name: str, config: str, files: dict[str, bytes]) -> Path:
    model_dir = repo / name
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config)
    for relative, content in files.items():
        (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / relative).write_bytes(content)
    return model_dir


@pytest.fixture
def source(tmp_path: Path) -> Path:
    repo = tmp_path / "source"
    write_model(repo, "cifar", TORCHSCRIPT_CONFIG, {"1/weights.pt": b"pt", "2/weights.pt": b"pt2", "labels.txt": b"a"})
    write_model(repo, "echo", PYTHON_CONFIG, {"1/model.py": b"# python model"})
    return repo


def test_derive_repository_adapts_torchscript_and_keeps_what_users_set(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "derived"
    target.mkdir()
    models = {m.name: m for m in derive_repository(source, target)}

    assert models["cifar"].adapted
    config = read_model_config(target / "cifar" / "config.pbtxt")
    assert (config.backend, config.platform, config.default_model_filename) == ("python", "", "")
    assert config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    groups = [(g.count, type(g).Kind.Name(g.kind), list(g.gpus)) for g in config.instance_group]
    assert groups == [(3, "KIND_CPU", [])]  # no GPU here: KIND_GPU runs on the CPU
    assert config.parameters["INFERENCE_MODE"].string_value == "false"
    assert config.parameters[MODEL_FILE_PARAMETER].string_value == "weights.pt"
    assert [o.label_filename for o in config.output] == ["labels.txt"]
    assert (target / "cifar" / "labels.txt").read_bytes() == b"a"
    for version, content in (("1", b"pt"), ("2", b"pt2")):
        assert (target / "cifar" / version / "weights.pt").read_bytes() == content
        assert "TritonPythonModel" in (target / "cifar" / version / "model.py").read_text()


def test_derive_repository_passes_other_backends_through(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "derived"
    target.mkdir()
    models = {m.name: m for m in derive_repository(source, target)}

    assert not models["echo"].adapted
    assert (target / "echo").resolve() == (source / "echo").resolve()


def test_derive_repository_accepts_backend_pytorch(tmp_path: Path) -> None:
    config = TORCHSCRIPT_CONFIG.replace('platform: "pytorch_libtorch"', 'backend: "pytorch"')
    write_model(tmp_path / "src", "cifar", config, {"1/weights.pt": b"pt"})
    (tmp_path / "out").mkdir()
    assert [m.adapted for m in derive_repository(tmp_path / "src", tmp_path / "out")] == [True]


def test_read_model_config_names_the_file_on_a_syntax_error(tmp_path: Path) -> None:
    write_model(tmp_path / "src", "bad", 'name: "bad"\nmax_batch_size: eight\n', {})
    (tmp_path / "out").mkdir()
    with pytest.raises(TritonServerError, match=r"bad/config\.pbtxt is not a valid Triton model config"):
        derive_repository(tmp_path / "src", tmp_path / "out")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda p: p / "missing", "does not exist", id="missing"),
        pytest.param(lambda p: (p / "empty").mkdir() or p / "empty", "holds no model directories", id="empty"),
    ],
)
def test_derive_repository_rejects_unusable_source(tmp_path: Path, make: object, message: str) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    (tmp_path / "out").mkdir()
    with pytest.raises(TritonServerError, match=message):
        derive_repository(source, tmp_path / "out")


@pytest.mark.parametrize(
    ("header", "files", "model_format", "filename"),
    [
        pytest.param(
            'backend: "pytorch"\nplatform: "torch_aoti"', {"1/model.pt2": b"pt2"}, "aoti", "model.pt2", id="pt2"
        ),
        pytest.param(
            'platform: "torch_aoti"\ndefault_model_filename: "classifier.pt2"',
            {"1/classifier.pt2": b"pt2"},
            "aoti",
            "classifier.pt2",
            id="pt2-named",
        ),
        pytest.param('platform: "onnxruntime_onnx"', {"1/model.onnx": b"onnx"}, "onnx", "model.onnx", id="onnx"),
        pytest.param('backend: "onnxruntime"', {"1/model.onnx": b"onnx"}, "onnx", "model.onnx", id="onnx-backend"),
        pytest.param(
            'platform: "pytorch_libtorch"', {"1/model.pt": b"pt"}, "torchscript", "model.pt", id="torchscript"
        ),
    ],
)
def test_each_pytorch_format_is_adapted_with_its_file_and_format(
    tmp_path: Path, header: str, files: dict[str, bytes], model_format: str, filename: str
) -> None:
    config = (
        f'name: "m"\n{header}\nmax_batch_size: 1\ninput [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [4] }} ]\n'
    )
    write_model(tmp_path / "src", "m", config, files)
    (tmp_path / "out").mkdir()

    [model] = derive_repository(tmp_path / "src", tmp_path / "out")

    derived = read_model_config(tmp_path / "out" / "m" / "config.pbtxt")
    assert (model.adapted, model.model_format) == (True, model_format)
    assert (derived.backend, derived.platform, derived.default_model_filename) == ("python", "", "")
    assert derived.parameters[MODEL_FILE_PARAMETER].string_value == filename
    assert derived.parameters[MODEL_FORMAT_PARAMETER].string_value == model_format
    assert (tmp_path / "out" / "m" / "1" / filename).read_bytes() == next(iter(files.values()))


def test_the_adapter_imports_the_kxform_that_derived_it(source: Path, tmp_path: Path) -> None:
    # Triton's stub embeds Python without PYTHONPATH: the derived config says where this kxform lives.
    (tmp_path / "derived").mkdir()
    derive_repository(source, tmp_path / "derived")

    path = read_model_config(tmp_path / "derived" / "cifar" / "config.pbtxt").parameters[KXFORM_PATH_PARAMETER]
    assert Path(path.string_value) == Path(kxform.__file__).resolve().parent.parent
    assert f'"{KXFORM_PATH_PARAMETER}"' in ADAPTER_SOURCE.read_text()


def test_the_seeds_default_model_name_is_pointed_to_the_real_field(tmp_path: Path) -> None:
    # Triton's PyTorch backend README writes `default_model_name`; model_config.proto's field is another.
    write_model(tmp_path / "src", "m", 'name: "m"\nplatform: "torch_aoti"\ndefault_model_name: "a.pt2"\n', {})
    (tmp_path / "out").mkdir()
    with pytest.raises(TritonServerError, match=r"\(the field is default_model_filename\)"):
        derive_repository(tmp_path / "src", tmp_path / "out")
