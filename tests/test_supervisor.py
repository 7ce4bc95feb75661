"""kxform.supervisor: real child processes started, waited on, and stopped with their whole process group."""

from __future__ import annotations

import io
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from kxform.supervisor import ProcessStartError, Supervised

HANG_GUARD_SECONDS = 30  # not a speed bound: a test that waits this long has hung


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_output_reaches_the_sink_prefixed_and_the_log_file(tmp_path: Path) -> None:
    sink = io.StringIO()
    child = Supervised("echo", python("print('one'); print('two')"), sink=sink, prefix="[echo] ")

    child.start()
    child.wait()
    child.drain()

    assert sink.getvalue() == "[echo] one\n[echo] two\n"
    assert list(child.tail) == ["one", "two"]


def test_a_log_file_alone_is_written_by_the_child_itself(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = Supervised("echo", python("import sys; print('to the file', flush=True); sys.exit(3)"), log_path=log)

    child.start()

    assert child.wait(HANG_GUARD_SECONDS) == 3
    assert log.read_text() == "to the file\n"
    assert child.last_lines() == "to the file"


def test_wait_ready_returns_once_the_check_passes(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    child = Supervised("ready", python(f"import pathlib, time; pathlib.Path({str(flag)!r}).touch(); time.sleep(60)"))
    child.start()
    try:
        child.wait_ready(flag.exists, HANG_GUARD_SECONDS)

        assert child.running()
    finally:
        assert child.stop(grace=5) == -signal.SIGTERM


def test_a_child_that_exits_before_it_is_ready_raises_with_its_status_and_log() -> None:
    child = Supervised("broken", python("import sys; print('cannot bind port 1'); sys.exit(2)"))
    child.start()

    with pytest.raises(ProcessStartError) as caught:
        child.wait_ready(lambda: False, HANG_GUARD_SECONDS)

    assert caught.value.returncode == 2
    assert "broken exited with status 2 before it was ready" in caught.value.message
    assert "cannot bind port 1" in caught.value.message


def test_a_child_not_ready_in_time_raises_naming_the_timeout() -> None:
    child = Supervised("slow", python("import time; print('still loading', flush=True); time.sleep(60)"))
    child.start()
    try:
        with pytest.raises(ProcessStartError) as caught:
            child.wait_ready(lambda: False, 0.5)
    finally:
        child.stop(grace=5)

    assert caught.value.returncode is None
    assert "slow was not ready after" in caught.value.message


def test_stop_kills_a_child_that_ignores_sigterm_and_everything_it_started() -> None:
    code = """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(grandchild.pid, flush=True)
        time.sleep(600)
    """
    child = Supervised("stubborn", python(code))
    child.start()
    child.wait_ready(lambda: len(child.tail) > 0, HANG_GUARD_SECONDS)
    grandchild = psutil.Process(int(child.tail[0]))

    status = child.stop(grace=0.5)

    assert status == -signal.SIGKILL
    grandchild.wait(HANG_GUARD_SECONDS)  # killed with the group, not left behind
    assert not grandchild.is_running()


def test_the_child_has_its_own_process_group_so_a_terminals_ctrl_c_reaches_only_the_parent() -> None:
    child = Supervised("group", python("import time; time.sleep(60)"))
    child.start()
    try:
        assert child.pid is not None
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    finally:
        child.stop(grace=5)


def test_stop_of_a_child_that_exited_returns_its_status() -> None:
    child = Supervised("done", python("import sys; sys.exit(5)"))
    child.start()
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while child.running() and time.monotonic() < deadline:
        time.sleep(0.05)

    assert child.stop() == 5
