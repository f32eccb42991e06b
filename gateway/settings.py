"""Runtime settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///pathway.db"


@dataclass(frozen=True)
class Settings:
    """Where Pathway keeps its data, secrets and configuration.

    ``public_url`` is the base URL partners use (token audience, links in Bundles);
    when unset, it is taken from each request. ``workers`` is how many processes
    ``pathway serve`` answers requests from.
    """

    database_url: str = DEFAULT_DATABASE_URL
    secrets_dir: Path = Path(".pathway-secrets")
    conf_dir: Path = Path("conf")
    public_url: str | None = None
    run_workers: bool = True
    workers: int = 1

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        """Settings from ``PATHWAY_*`` environment variables, then explicit overrides."""
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("PATHWAY_DATABASE_URL", DEFAULT_DATABASE_URL),
            "secrets_dir": Path(env.get("PATHWAY_SECRETS_DIR", ".pathway-secrets")),
            "conf_dir": Path(env.get("PATHWAY_CONF_DIR", "conf")),
            "public_url": env.get("PATHWAY_PUBLIC_URL") or None,
            "run_workers": env.get("PATHWAY_RUN_WORKERS", "1") != "0",
            "workers": _positive_int("PATHWAY_WORKERS", env.get("PATHWAY_WORKERS", "1")),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """These settings as the ``PATHWAY_*`` variables ``from_env`` reads back
        (how worker processes started by ``pathway serve`` receive them)."""
        env = {
            "PATHWAY_DATABASE_URL": self.database_url,
            "PATHWAY_SECRETS_DIR": str(self.secrets_dir),
            "PATHWAY_CONF_DIR": str(self.conf_dir),
            "PATHWAY_RUN_WORKERS": "1" if self.run_workers else "0",
            "PATHWAY_WORKERS": str(self.workers),
        }
        if self.public_url:
            env["PATHWAY_PUBLIC_URL"] = self.public_url
        return env


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1; got {text!r}")
    return value
