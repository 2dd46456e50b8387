"""The test harness itself: a hung launch must fail with the stack of every process in it."""

from __future__ import annotations

import sys
import textwrap

import pytest

from tests.helpers.runs import run_command

# A launcher that, like torchrun, starts its worker in a session of its own, then both hang.
LAUNCHER = textwrap.dedent(
    """
    import subprocess, sys, time
    WORKER = "import time\\ndef waiting_in_the_worker():\\n    time.sleep(600)\\nwaiting_in_the_worker()"
    worker = subprocess.Popen([sys.executable, "-c", WORKER], start_new_session=True)
    def waiting_in_the_launcher():
        time.sleep(600)
    waiting_in_the_launcher()
    """
)


def test_a_hung_launch_fails_with_the_stacks_of_the_launcher_and_its_workers() -> None:
    with pytest.raises(AssertionError) as failure:
        run_command([sys.executable, "-c", LAUNCHER], timeout=4)
    message = str(failure.value)
    assert "hung for 4s" in message
    assert "waiting_in_the_launcher" in message
    assert "waiting_in_the_worker" in message
