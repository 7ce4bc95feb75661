"""The command line: serve's settings (flags, aliases, environment), plugins, dev and infer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kxform.cli import main, parse_args
from kxform.settings import serve_settings
from kxform.testing import ServerProcess, free_port, kxform_command


def test_serve_takes_the_flags_kserve_appends() -> None:
    args = parse_args(
        [
            "serve",
            "--transformer",
            "test-cifar10",
            "--model_name",
            "cifar10",
            "--predictor_host",
            "cifar10-predictor.default:80",
            "--http_port",
            "8080",
            "--protocol",
            "v2",
        ]
    )
    settings = serve_settings(args)

    assert settings.model_names() == ["cifar10"]
    assert (settings.predictor.host, settings.predictor.protocol) == ("cifar10-predictor.default:80", "v2")
    assert settings.http_port == 8080


def test_serve_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KXFORM_TRANSFORMER", "test-cifar10,test-tensor")
    monkeypatch.setenv("KXFORM_PREDICTOR_HOST", "triton:8001")
    monkeypatch.setenv("KXFORM_PREDICTOR_PROTOCOL", "grpc-v2")
    monkeypatch.setenv("KXFORM_PREDICTOR_REQUEST_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("KXFORM_ENABLE_GRPC", "false")

    settings = serve_settings(parse_args(["serve"]))

    assert settings.transformers == ("test-cifar10", "test-tensor")
    assert settings.model_names() == ["test-cifar10", "test-tensor"]
    assert (settings.predictor.host, settings.predictor.protocol, settings.predictor.timeout) == (
        "triton:8001",
        "grpc-v2",
        2.5,
    )
    assert settings.enable_grpc is False


def test_serve_rejects_v1_to_the_predictor(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["serve", "--transformer", "x", "--predictor_protocol", "v1"])

    assert caught.value.code == 2
    assert "Triton speaks the V2 protocol" in capsys.readouterr().err


def test_serve_takes_a_worker_count_or_auto_and_rejects_anything_else(capsys: pytest.CaptureFixture[str]) -> None:
    from kxform.settings import available_cpus

    assert parse_args(["serve", "--transformer", "x", "--workers", "4"]).workers == 4
    assert parse_args(["serve", "--transformer", "x", "--workers", "auto"]).workers == available_cpus() >= 1
    assert parse_args(["serve", "--transformer", "x", "--workers", "0"]).workers == 1  # kserve's 0: one
    for bad in ("-1", "two", "1.5"):
        with pytest.raises(SystemExit):
            parse_args(["serve", "--transformer", "x", "--workers", bad])
        assert "positive number of workers or 'auto'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: 2 workers (the quota is shared, not a core each)
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),  # no quota: every CPU we may run on
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
    ids=["v2-fraction", "v2-half", "v2-none", "v1-one", "v1-none", "no-cgroup"],
)
def test_auto_workers_follow_the_cgroup_cpu_quota(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    from kxform.settings import available_cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    allowed = len(os.sched_getaffinity(0))

    assert available_cpus(tmp_path) == (allowed if expected is None else min(expected, allowed))


def test_serve_batch_delay_is_zero_or_more_microseconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["serve", "--transformer", "x", "--batch_max_delay_us", "0"]).batch_max_delay_us == 0
    assert parse_args(["serve", "--transformer", "x", "--batch_max_delay_us", "750"]).batch_max_delay_us == 750
    with pytest.raises(SystemExit):
        parse_args(["serve", "--transformer", "x", "--batch_max_delay_us", "-5"])
    assert "expected 0 or a positive whole number" in capsys.readouterr().err


def test_serve_names_a_missing_plugin_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["serve", "--transformer", "no-such-plugin", "--predictor_host", "127.0.0.1:1"])

    assert status == 1
    assert (
        capsys.readouterr().err.strip().startswith("kxform serve: error: no transformer plugin named 'no-such-plugin'")
    )


def test_plugins_lists_name_distribution_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0

    rows = [line.split("  ") for line in capsys.readouterr().out.splitlines()]
    rows = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    assert rows[0] == ["NAME", "DISTRIBUTION", "VERSION", "MODEL", "ENTRY POINT"]
    assert [
        "test-cifar10",
        "kxform-test-plugins",
        "0.0.1",
        "cifar10",
        "kxform_test_plugins.plugins:Cifar10Images",
    ] in rows
    assert ["test-broken-import", "kxform-test-plugins", "0.0.1", "?", "kxform_test_plugins.broken:Plugin"] in rows
    assert "kxform_test_plugins.broken" not in sys.modules


@pytest.mark.integration
def test_dev_prints_a_working_curl_line_and_ctrl_c_stops_both(model_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "cifar10").symlink_to(model_repository / "cifar10")
    ports = {name: free_port() for name in ("http", "grpc", "th", "tg", "tm")}
    log = tmp_path / "dev.log"
    command = kxform_command(
        "dev",
        f"--model-repository={repo}",
        "--transformer=test-cifar10",
        f"--http_port={ports['http']}",
        f"--grpc_port={ports['grpc']}",
        f"--triton-http-port={ports['th']}",
        f"--triton-grpc-port={ports['tg']}",
        f"--triton-metrics-port={ports['tm']}",
        f"--playground_port={free_port()}",
    )
    with log.open("w") as out:
        dev = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "kxform dev is ready" not in log.read_text() and dev.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        text = log.read_text()
        assert "kxform dev is ready" in text, text[-3000:]
        children = psutil.Process(dev.pid).children(recursive=True)
        curl = next(line.strip() for line in text.splitlines() if ":predict -d @" in line)

        reply = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=60, check=True)
        dev.send_signal(signal.SIGINT)
        status = dev.wait(timeout=60)
    finally:
        if dev.poll() is None:
            dev.kill()

    assert re.match(r"curl -s http://127\.0\.0\.1:\d+/v1/models/test-cifar10:predict -d @/", curl)
    assert json.loads(reply.stdout)["predictions"][0]["class"]
    assert status == 0
    assert [p.pid for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert "[triton] " in text
    assert "[serve] " in text


def test_dev_port_in_use_is_a_one_line_error(model_repository: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            kxform_command(
                "dev", f"--model-repository={model_repository}", "--transformer=test-cifar10", f"--http_port={port}"
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"kxform dev: error: port {port} is in use (--http_port); stop what listens there or pass another --http_port"
    )


@pytest.mark.integration
def test_infer_sends_image_files_and_prints_the_reply(triton: ServerProcess, tmp_path: Path) -> None:
    from kxform.testing import start_serve

    server = start_serve(["test-cifar10"], f"127.0.0.1:{triton.ports['http']}", tmp_path)
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "kxform",
                "infer",
                "test-cifar10",
                str(image),
                str(image),
                f"--url={server.http_url}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()

    assert done.returncode == 0, done.stderr
    predictions = json.loads(done.stdout)["predictions"]
    assert len(predictions) == 2
    assert predictions[0] == predictions[1]


def test_serve_with_kserve_refuses_workers_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["serve", "--transformer", "x", "--server", "kserve", "--workers", "2"])

    assert status == 2
    assert "--server kserve serves one process; drop --workers 2" in capsys.readouterr().err
