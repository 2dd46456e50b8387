"""torchrun as make, the tools and the tests start it: `python tools/torchrun_agent.py <torchrun args>`.

The same agent as `torchrun` (torch.distributed.run's `main`, same arguments), with three
differences, each for a reason:

- A failed worker group ends with the worker's own line. Every rank of the template ends through
  foundation/exit.py, which prints one `error: …` line (or a traceback, for a bug) before it exits;
  torchrun then adds its teardown chatter and a 40-line `ChildFailedError` traceback that buries
  that line and names nothing new. Here the agent exits with the failed worker's own exit code
  (torchrun exits 1 whatever the code), silently; only a worker ended by a signal, which could not
  say why, gets one line from the agent. A signal to the agent itself (SIGTERM before a
  preemption, Ctrl-C) ends it with 128 + the signal once the workers have stopped, as a single
  process does.
- Its log lines that only retell the end ("Sending process … closing signal", "failed (exitcode:
  N)" of a worker that printed its own line) are dropped; everything else torchrun logs is kept.
- The objects its imports created are frozen out of the garbage collector (`gc.freeze`, as every
  entry point of the template does, see foundation/exit.py): the agent outlives its workers, and
  its interpreter teardown, about half a second here, came after every multi-process run's work.

Its file name keeps "torchrun" in the command line, which runtime/launcher_watch.py looks for.
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
    """A line that only repeats what the worker said, or the agent's own teardown."""
    if record.msg.startswith("Sending process "):
        return True
    if record.msg.startswith("failed (exitcode: "):
        return isinstance(record.args, tuple) and int(record.args[0]) > 0
    return False


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_code_of(failed: ChildFailedError) -> int:
    """The first failed worker's exit code; for a worker ended by a signal, one line saying so
    and 128 + the signal, the shell's convention."""
    rank, failure = failed.get_first_failure()
    if failure.exitcode >= 0:
        return failure.exitcode
    number = -failure.exitcode
    print(
        f"error: rank {rank} (pid {failure.pid}) was ended by {signal_name(number)} before it "
        "could report (out of memory? killed?); the other ranks were stopped",
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
