"""A name → builder table, shared by the dataset and model registries.

Why one helper: a fork adds a dataset or a model by decorating one function; a second registration
of a name is a bug in the fork (refused at import), and an unknown name in a config is a user
error that names the closest registered one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from foundation.errors import UserError

Builder = TypeVar("Builder", bound=Callable[..., object])


class Registry(Generic[Builder]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Builder] = {}

    def register(self, name: str) -> Callable[[Builder], Builder]:
        """Decorator: `@DATASETS.register("name")` (exported as `register_dataset("name")`)."""

        def decorate(builder: Builder) -> Builder:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return decorate

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builders))

    def __len__(self) -> int:
        return len(self._builders)

    def check(self, name: str) -> None:
        """A one-line UserError for an unknown name, with the closest registered one."""
        if name in self._builders:
            return
        close = difflib.get_close_matches(name, self._builders, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(sorted(self._builders))}"
        )

    def __getitem__(self, name: str) -> Builder:
        self.check(name)
        return self._builders[name]
