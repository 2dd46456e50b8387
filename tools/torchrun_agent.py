"""torchrun as the tools and the tests start it: `python tools/torchrun_agent.py <torchrun args>`.

The same agent as `torchrun` (torch.distributed.run's `main`, same arguments, same exit codes),
with the objects its imports created frozen out of the garbage collector (`gc.freeze`, as every
entry point of the template does, see foundation/exit.py). The agent outlives its workers, so
its interpreter teardown, about half a second here, came after every multi-process run's work;
short runs started by the hundred (tests, benchmarks, verify) paid it each time. Its file name
keeps "torchrun" in the command line, which runtime/launcher_watch.py looks for.
"""

from __future__ import annotations

import gc

from torch.distributed.run import main

if __name__ == "__main__":
    gc.freeze()
    try:
        main()
    finally:
        gc.freeze()
