"""torchrun as make, the tools and the tests start it: `python tools/torchrun_agent.py <torchrun args>`.

The same agent as `torchrun` (torch.distributed.run's `main`, same arguments), with three
differences, each for a reason:

- A failed worker group ends with the worker's own line. Every rank of the template ends through
  foundation/exit.py, which prints one `error: …` line (or a traceback, for a bug) before it exits;
  torchrun then adds its teardown chatter and a 40-line `ChildFailedError` traceback that buries
  that line and names nothing new. Here the agent exits with the exit code of the first worker
  that reported (torchrun exits 1 whatever the code), silently; only where every failed worker
  was ended by a signal, so that none could say why, the agent says it in one line. A signal to
  the agent itself (SIGTERM before a preemption, Ctrl-C) ends it with 128 + the signal once the
  workers have stopped, as a single process does.
- Its log lines that only retell the end ("Sending process … closing signal", "failed (exitcode:
  N)") are dropped; everything else torchrun logs is kept (its start banner, a restart).
- The objects its imports created are frozen out of the garbage collector (`gc.freeze`, as every
  entry point of the template does, see foundation/exit.py): the agent outlives its workers, and
  its interpreter teardown, about half a second here, came after every multi-process run's work.

It runs as a script (`sys.path[0]` is tools/), so it imports nothing of the template. Its file name
keeps "torchrun" in the command line, which runtime/launcher_watch.py looks for.
`.venv/bin/torchrun` itself still works and prints what torchrun prints.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main

# The logger of torchrun's worker processes (torch/distributed/elastic/multiprocessing/api.py).
WORKER_LOGGER = "torch.distributed.elastic.multiprocessing.api"


def retells_the_end(record: logging.LogRecord) -> bool:
    """A line that only repeats what a worker said, or what the agent says at its end."""
    return record.msg.startswith(("Sending process ", "failed (exitcode: "))


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_code_of(failed: ChildFailedError) -> int:
    """The exit code of the first worker that reported its failure (its line is printed);
    when every failed worker was ended by a signal and none could say so, one line naming the
    first, and 128 + the signal, the shell's convention."""
    by_time = sorted(failed.failures.items(), key=lambda item: item[1].timestamp)
    reported = [failure.exitcode for _, failure in by_time if failure.exitcode > 0]
    if reported:
        return reported[0]
    rank, failure = by_time[0]
    number = -failure.exitcode
    print(
        f"error: rank {rank} (pid {failure.pid}) was ended by {signal_name(number)} before it "
        "could report (out of memory, or killed)",
        file=sys.stderr,
        flush=True,
    )
    return 128 + number


def run_agent() -> int:
    logging.getLogger(WORKER_LOGGER).addFilter(lambda record: not retells_the_end(record))
    try:
        main()
    except ChildFailedError as failed:
        return exit_code_of(failed)
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    return 0


if __name__ == "__main__":
    gc.freeze()
    try:
        code = run_agent()
    finally:
        gc.freeze()
    sys.exit(code)
