"""What plugin authors import: ``kxform``'s public names, pinned, and light to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kxform
from kxform import KxformError, TensorSpec

PUBLIC = [
    "Call",
    "Context",
    "DecodeError",
    "KxformError",
    "ModelSpec",
    "Outputs",
    "RequestError",
    "TensorSpec",
    "Transformer",
    "__version__",
]


def test_the_public_names_are_pinned() -> None:
    # A name added to or removed from kxform.__all__ changes what plugins may rely on: update PUBLIC on purpose.
    assert sorted(kxform.__all__) == sorted(PUBLIC)
    for name in kxform.__all__:
        assert hasattr(kxform, name), name


def test_importing_kxform_loads_no_transport_and_no_torch() -> None:
    # A fresh interpreter: this test process has long imported tritonclient, grpc and torch.
    code = (
        "import sys, kxform\n"
        "heavy = ('tritonclient', 'grpc', 'torch', 'torchvision', 'kserve')\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_a_tensor_spec_with_an_unknown_datatype_fails_where_it_is_declared() -> None:
    with pytest.raises(KxformError) as caught:
        TensorSpec("x", "FP33", (3,))

    assert "'FP33' is not a V2 datatype" in caught.value.message
    assert "FP32" in caught.value.message


@pytest.mark.parametrize("shape", [(-2,), (3, 1.5)])
def test_a_tensor_spec_with_an_impossible_shape_fails(shape: tuple[int, ...]) -> None:
    with pytest.raises(KxformError, match="shape"):
        TensorSpec("x", "FP32", shape)
