"""The runtime around a run: joining and leaving the process group, the health vote, stop
signals, faults and the one run session that owns them, the recorder of everything a run
writes, the run directory, checkpoints, provenance and progress.
"""
