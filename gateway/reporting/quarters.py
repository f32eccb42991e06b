"""Reporting quarters: calendar quarters named ``2026Q3`` (1 July to 30 September 2026),
as Public Health Scotland publishes the waiting times."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

_NAME = re.compile(r"^(\d{4})[Qq]([1-4])$")


@dataclass(frozen=True, order=True)
class Quarter:
    year: int
    number: int

    @classmethod
    def parse(cls, text: str) -> "Quarter":
        """``2026Q3`` -> Quarter(2026, 3); ValueError saying what is expected."""
        match = _NAME.match(text.strip())
        if match is None:
            raise ValueError(f"quarter {text!r} is not of the form YYYYQn, e.g. 2026Q3 for July to September 2026")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def containing(cls, day: date) -> "Quarter":
        return cls(day.year, (day.month - 1) // 3 + 1)

    @property
    def start(self) -> date:
        return date(self.year, 3 * self.number - 2, 1)

    @property
    def end(self) -> date:
        """The quarter's last day (inclusive)."""
        following = date(self.year + 1, 1, 1) if self.number == 4 else date(self.year, 3 * self.number + 1, 1)
        return following - timedelta(days=1)

    def previous(self) -> "Quarter":
        return Quarter(self.year - 1, 4) if self.number == 1 else Quarter(self.year, self.number - 1)

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"
