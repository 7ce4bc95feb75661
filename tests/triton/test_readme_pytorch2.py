"""README's "PyTorch 2 models" walk-through, run as a user runs it: export and compile, the names it prints,
the config, ``kxform triton``, the curl line; the answer equals the package run in this process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kxform.testing import start_triton

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text()
    start = text.index("## PyTorch 2 models")
    return text[start : text.index("\n## ", start + 1)]


def block(first_line: str) -> str:
    """The fenced code block of the section whose first line is ``first_line``."""
    for match in re.finditer(r"```\w*\n(.*?)```", section(), re.S):
        if match[1].startswith(first_line):
            return match[1]
    raise AssertionError(f"README's PyTorch 2 section has no code block starting {first_line!r}")


def test_readme_pytorch2_walkthrough_works_as_printed(tmp_path: Path) -> None:
    (tmp_path / "export_scorer.py").write_text(block("# export_scorer.py"))
    (tmp_path / "pt2-models" / "scorer" / "1").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # this checkout's kxform, as `make setup` gives

    printed = subprocess.run(
        [sys.executable, "export_scorer.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )

    assert printed.returncode == 0, printed.stderr[-3000:]
    assert printed.stdout.strip() == block("input  INPUT__0").strip()
    config = block("# pt2-models/scorer/config.pbtxt")
    (tmp_path / "pt2-models" / "scorer" / "config.pbtxt").write_text(config)
    (curl,) = [line for line in section().splitlines() if line.startswith("curl ")]
    server = start_triton(tmp_path / "pt2-models", tmp_path)
    try:
        command = curl.replace("http://127.0.0.1:8000", server.http_url)
        reply = json.loads(subprocess.run(["bash", "-c", command], capture_output=True, check=True, timeout=60).stdout)
    finally:
        server.stop()

    body = json.loads(re.search(r"-d '(.*)'", curl)[1])  # type: ignore[index]
    inputs = {
        tensor["name"]: torch.tensor(tensor["data"], dtype=torch.float32).reshape(tensor["shape"])
        for tensor in body["inputs"]
    }
    package = torch._inductor.aoti_load_package(str(tmp_path / "pt2-models" / "scorer" / "1" / "model.pt2"))
    expected = package({"x": inputs["ARGS[0][x]"], "mean": inputs["ARGS[0][mean]"]}, scale=inputs["KWARGS[scale]"])
    outputs = {output["name"]: output["data"] for output in reply["outputs"]}
    assert sorted(outputs) == ["RESULT[logits]", "RESULT[probs]"]
    for key in ("logits", "probs"):
        assert outputs[f"RESULT[{key}]"] == pytest.approx(expected[key].flatten().tolist(), abs=1e-6)


def test_readme_pytorch2_plugin_fits_the_readme_config() -> None:
    # The plugin snippet against the config it is written for, no servers: its Call gets the config's names.
    import numpy as np

    import kxform
    from kxform.spec import ModelSpec, TensorSpec
    from kxform.tensors import assemble_inputs, shape_outputs

    namespace: dict[str, object] = {"np": np, "kxform": kxform}
    exec(block("class Scorer(kxform.Transformer)"), namespace)
    plugin = namespace["Scorer"]()  # type: ignore[operator]
    spec = ModelSpec(
        "scorer",
        "1",
        tuple(TensorSpec(n, "FP32", (d,)) for n, d in (("ARGS[0][x]", 4), ("ARGS[0][mean]", 4), ("KWARGS[scale]", 1))),
        (TensorSpec("RESULT[logits]", "FP32", (2,)), TensorSpec("RESULT[probs]", "FP32", (2,))),
        max_batch_size=1,
    )

    inputs = assemble_inputs(plugin.preprocess([{"x": [1, 2, 3, 4]}, {"x": [0, 0, 0, 0]}], None), spec)
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)
    outputs = shape_outputs({"RESULT[logits]": np.zeros((2, 2), np.float32), "RESULT[probs]": probs}, spec, 2)

    assert sorted(inputs) == ["ARGS[0][mean]", "ARGS[0][x]", "KWARGS[scale]"]
    assert inputs["ARGS[0][x]"].tolist() == [[1, 2, 3, 4], [0, 0, 0, 0]]
    assert plugin.postprocess(outputs, None) == [{"probs": [0.25, 0.75]}, {"probs": [0.5, 0.5]}]
