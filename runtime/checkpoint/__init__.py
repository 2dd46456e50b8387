"""Checkpoints, owned in one place and written one way: the owner (owner.py: when to save, what
goes in, the refusal to save a broken state) hands a state to its format, which puts it on disk.

    owner        Checkpointer and the `checkpoint` section: the run's checkpoints, every rank
    resume       the resume plan: which checkpoint a run continues from, decided before writing
    fingerprint  what a checkpoint computed; the first key a resume would change
    files        on disk: atomic file + checksum, `last`, the newest complete, keep-last-k, damaged
    directory    the per-rank format (a directory, each rank its own shard file, through DCP)
    dcp, dcp_index  torch.distributed.checkpoint behind it, and its index read as data
    contents     reading one back as untrusted input: links, pickles, every field checked
    names        file names and the format tag
"""
