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
    when unset, it is taken from each request.
    """

    database_url: str = DEFAULT_DATABASE_URL
    secrets_dir: Path = Path(".pathway-secrets")
    conf_dir: Path = Path("conf")
    public_url: str | None = None
    run_workers: bool = True

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
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
