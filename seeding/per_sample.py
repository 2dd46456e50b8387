"""Per-sample randomness: augmentation as a pure function of (base seed, epoch, sample index).

Why: albumentations 2.0.8 ignores the global seeds, hands every DataLoader worker a copy of the
same generator (identical augmentations in every worker) and repeats them every epoch with
non-persistent workers; `Compose.set_random_seed` correlates child transforms (all seeded alike).
So each sample gets its own position in one counter-based stream instead:

    Philox4x64(key = plan.augment_key(), counter = [0, lane, epoch, index])

Philox increments the counter from its lowest word, so each sample owns 2**64 blocks before it
could reach the next sample's start: no collisions by construction, whatever the number of
workers, ranks or the order in which samples are loaded.

Speed (`make bench-seeding`, 2-core CPU): building a SeedSequence and fresh generators per sample
costs about 44 µs a sample end to end. Here one `np.random.Generator` and one `random.Random`
facade are bound to the pipeline once (`Compose.set_random_state`, so child transforms draw from
one shared stream and decide independently) and repositioned in place: about 11 µs a sample end
to end, of which the state assignment is about 3 µs and most of the rest is the facade's draws
being Python calls. The python facade draws from the same Philox stream, so there is no Mersenne
Twister to reseed (reseeding one costs more than this whole assignment).
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple, Protocol

import numpy as np

TRAIN_LANE = 0
EVAL_LANE = 1
_TWO_POW_MINUS_53 = 2.0**-53


class SampleKey(NamedTuple):
    """What the sampler hands the dataset: the sample and the epoch it is drawn in."""

    index: int
    epoch: int


class PhiloxRandom(random.Random):
    """A `random.Random` whose bits come from a numpy Philox bit generator.

    Every method of random.Random (random, uniform, randint, choice, shuffle, gauss, ...) is built
    on `random()` and `getrandbits()`, which are overridden here. Words are read from the bit
    generator in blocks to keep the per-draw cost low.
    """

    _BLOCK = 8

    def __init__(self, bit_generator: np.random.BitGenerator) -> None:
        self._bit_generator = bit_generator
        self._words: list[int] = []
        super().__init__()

    def seed(self, a: Any = None, version: int = 2) -> None:
        """Ignored: the stream is positioned by `SampleRandomness.reseed`, not by seeding."""
        self.restart()

    def restart(self) -> None:
        """Forget buffered words and gauss()'s cached second value after repositioning."""
        self._words = []
        self.gauss_next = None

    def _next_word(self) -> int:
        if not self._words:
            self._words = self._bit_generator.random_raw(self._BLOCK).tolist()
        return self._words.pop()

    def random(self) -> float:
        # Inlined _next_word: albumentations calls this several times per sample.
        words = self._words
        if not words:
            words = self._words = self._bit_generator.random_raw(self._BLOCK).tolist()
        return (words.pop() >> 11) * _TWO_POW_MINUS_53

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        value = 0
        for _ in range((k + 63) // 64):
            value = (value << 64) | self._next_word()
        return value >> ((-k) % 64)

    def getstate(self) -> Any:
        raise TypeError("PhiloxRandom has no state of its own; its position is (epoch, index)")

    def __reduce__(self) -> tuple[Any, ...]:
        return (PhiloxRandom, (self._bit_generator,))


class SampleRandomness:
    """One numpy Generator and one random.Random, repositioned per sample in place."""

    def __init__(self, key: tuple[int, int], lane: int = TRAIN_LANE) -> None:
        self.bit_generator = np.random.Philox(key=np.array(key, dtype=np.uint64))
        self.numpy = np.random.Generator(self.bit_generator)
        self.python = PhiloxRandom(self.bit_generator)
        self.lane = lane
        template = self.bit_generator.state
        self._key = template["state"]["key"]
        self._buffer = template["buffer"]

    def reseed(self, epoch: int, index: int) -> None:
        self.bit_generator.state = {
            "bit_generator": "Philox",
            "state": {
                "counter": np.array([0, self.lane, epoch, index], dtype=np.uint64),
                "key": self._key,
            },
            "buffer": self._buffer,
            "buffer_pos": 4,
            "has_uint32": 0,
            "uinteger": 0,
        }
        self.python.restart()


class RandomStateAware(Protocol):
    """What a transform needs for binding: albumentations' Compose has it."""

    def set_random_state(
        self, generator: np.random.Generator, py_random: random.Random
    ) -> None: ...


def bind_transform(transform: RandomStateAware, randomness: SampleRandomness) -> None:
    """Make `transform` and all its children draw from `randomness` (one shared pair)."""
    transform.set_random_state(randomness.numpy, randomness.python)
