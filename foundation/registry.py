"""A name → (builder, config section) table, shared by the dataset and model registries.

Why one helper: a fork adds a dataset or a model by decorating one function with the config
section it reads (`@register_model("name", MyModelConfig)`); a second registration of a name is a
bug in the fork (refused at import), and an unknown name in a config is a user error that names
the closest registered one. The section's `name` field must default to the registered name: the
config loader picks the section by that name, so a key the chosen component does not read is an
error like any unknown key.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from foundation.errors import UserError
from foundation.section import Section

Builder = TypeVar("Builder", bound=Callable[..., object])


@dataclass(frozen=True)
class Entry(Generic[Builder]):
    builder: Builder
    config: type[Section]  # the component's config section
    extras: dict[str, Any]  # anything else the registry's users want to know (e.g. an example)


class Registry(Generic[Builder]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[Builder]] = {}

    def register(
        self, name: str, config: type[Section], **extras: Any
    ) -> Callable[[Builder], Builder]:
        """Decorator: `@register_dataset("name", NameDataConfig)`."""
        declared = config.model_fields["name"].default if "name" in config.model_fields else None
        if declared != name:
            raise ValueError(
                f"{self.kind} {name!r}: {config.__name__}.name must default to {name!r}, "
                f"not {declared!r}"
            )

        def decorate(builder: Builder) -> Builder:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(builder, config, extras)
            return builder

        return decorate

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, name: str) -> None:
        """A one-line UserError for an unknown name, with the closest registered one."""
        if name in self._entries:
            return
        close = difflib.get_close_matches(str(name), self._entries, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(sorted(self._entries))}"
        )

    def entry(self, name: str) -> Entry[Builder]:
        self.check(name)
        return self._entries[name]

    def __getitem__(self, name: str) -> Builder:
        return self.entry(name).builder

    def config(self, name: str) -> type[Section]:
        return self.entry(name).config

    def readers_of(self, key: str) -> list[str]:
        """The registered names whose section has `key` (for a hint when another one is chosen)."""
        return [name for name in self if key in self._entries[name].config.model_fields]
