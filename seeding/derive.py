"""Counter-based derivation of every seed from the one base seed.

Why not `seed + rank`: arithmetic seeds collide (base 0 / rank 3 is base 3 / rank 0, and torch's
DistributedSampler makes seed 0 / epoch 3 equal seed 3 / epoch 0). Here every seed is
`SeedSequence(entropy=base, spawn_key=(stream_code, *coordinates))`: numpy's SeedSequence hashes
the whole tuple, so two different (base, stream, coordinates) give unrelated seeds, for any base in
[0, 2**64). The stream code is a fixed CRC-32 of the stream's name, so adding a stream never
shifts the others.
"""

from __future__ import annotations

import zlib

import numpy as np

SEED_LIMIT = 2**64


def check_base_seed(base: int) -> int:
    """Return `base` if it is a usable base seed, else raise ValueError naming the range."""
    if isinstance(base, bool) or not isinstance(base, int) or not 0 <= base < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {base!r}")
    return base


def stream_code(stream: str) -> int:
    """A stable 32-bit code for a stream name (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(stream.encode("utf-8"))


def seed_sequence(base: int, stream: str, *coordinates: int) -> np.random.SeedSequence:
    """The SeedSequence of one stream at one coordinate tuple (rank, worker, epoch, ...)."""
    check_base_seed(base)
    for value in coordinates:
        if value < 0:
            raise ValueError(f"seed coordinates must be non-negative, got {coordinates}")
    return np.random.SeedSequence(entropy=base, spawn_key=(stream_code(stream), *coordinates))


def derive_seed(base: int, stream: str, *coordinates: int) -> int:
    """A 64-bit seed for `stream` at `coordinates`; accepted by torch, random and numpy alike."""
    words = seed_sequence(base, stream, *coordinates).generate_state(1, np.uint64)
    return int(words[0])


def derive_key(base: int, stream: str, *coordinates: int) -> tuple[int, int]:
    """A 128-bit key (two 64-bit words), for counter-based generators such as Philox."""
    words = seed_sequence(base, stream, *coordinates).generate_state(2, np.uint64)
    return int(words[0]), int(words[1])


def numpy_legacy_seed(seed: int) -> np.ndarray:
    """Entropy for `np.random.seed` (32-bit words only), expanded so numpy differs from python.

    `random.seed(s)` and `np.random.seed([s & 0xFFFFFFFF, s >> 32])` both feed MT19937's
    init_by_array the same words and would produce the *same* stream; hashing the seed through a
    SeedSequence first gives numpy its own.
    """
    return np.random.SeedSequence(seed).generate_state(4, np.uint32)
