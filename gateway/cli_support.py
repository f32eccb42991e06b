"""What every ``pathway`` subcommand module shares: opening the gateway and printing JSON.

Subcommand modules (``gateway.delivery.cli``...) import these instead of ``gateway.cli``,
which imports them to register their commands.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import orjson

from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.runtime import Gateway


def print_json(value: object) -> None:
    """``value`` as indented JSON on stdout."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def open_gateway(settings: Settings | None = None) -> "Gateway":
    """The gateway on ``PATHWAY_DATABASE_URL`` (or ``settings``); the caller closes it."""
    from gateway.runtime import Gateway

    return Gateway.start(settings or Settings.from_env())
