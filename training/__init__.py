"""What one run computes: the trainer and its step strategies (the ordinary data-parallel step,
the world-size-invariant step), the optimizer and schedule, the determinism switches, the
non-finite watch, and the protocols through which the trainer talks to the outside world.

It knows no files, no signals and no process group set-up: those are `runtime/`'s.
"""
