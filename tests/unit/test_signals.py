"""Which signals a run takes over: SIGHUP stops it like SIGTERM, except under nohup."""

from __future__ import annotations

import signal

from runtime.signals import StopSignals


def test_sighup_is_handled_but_a_nohup_run_keeps_ignoring_it() -> None:
    previous = signal.getsignal(signal.SIGHUP)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        handled = StopSignals(announce=False)
        handled.install()
        assert signal.getsignal(signal.SIGHUP) == handled._handle
        handled.uninstall()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup leaves
        under_nohup = StopSignals(announce=False)
        under_nohup.install()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == under_nohup._handle
        under_nohup.uninstall()
    finally:
        signal.signal(signal.SIGHUP, previous)
