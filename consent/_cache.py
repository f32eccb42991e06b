"""A bounded cache keyed by object identity, for compiling the same input dicts once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

Source = TypeVar("Source")
Built = TypeVar("Built")


class IdentityCache(Generic[Source, Built]):
    """``build(source)`` remembered per source object.

    The source is held strongly beside its result so its ``id`` cannot be reused by another
    object while cached. Sources must not be changed in place after they were first seen.
    """

    def __init__(self, build: Callable[[Source], Built], limit: int = 8192) -> None:
        self._build = build
        self._limit = limit
        self._entries: dict[int, tuple[Source, Built]] = {}

    def __call__(self, source: Source) -> Built:
        entry = self._entries.get(id(source))
        if entry is not None and entry[0] is source:
            return entry[1]
        built = self._build(source)
        if len(self._entries) >= self._limit:
            del self._entries[next(iter(self._entries))]
        self._entries[id(source)] = (source, built)
        return built
