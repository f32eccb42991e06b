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
    ``pathway serve`` answers requests from. ``expose_api_docs`` publishes
    ``/openapi.json``, ``/docs`` and ``/redoc``. A request's headers must arrive
    within ``header_timeout`` seconds and its body within ``body_timeout``
    (``ingest_body_timeout`` for raw extracts) of its start. ``loopback_subscriptions``
    lets partners' own Subscriptions name http://127.0.0.1 or localhost (the demo's inboxes and
    the tests' receivers); off, a partner cannot point the gateway at its own host's services.
    """

    database_url: str = DEFAULT_DATABASE_URL
    secrets_dir: Path = Path(".pathway-secrets")
    conf_dir: Path = Path("conf")
    public_url: str | None = None
    run_workers: bool = True
    workers: int = 1
    expose_api_docs: bool = False
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    ingest_body_timeout: float = 600.0
    loopback_subscriptions: bool = False

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
            "expose_api_docs": _flag("PATHWAY_EXPOSE_API_DOCS", env.get("PATHWAY_EXPOSE_API_DOCS", "0")),
            "header_timeout": _seconds("PATHWAY_HEADER_TIMEOUT", env.get("PATHWAY_HEADER_TIMEOUT", "10")),
            "body_timeout": _seconds("PATHWAY_BODY_TIMEOUT", env.get("PATHWAY_BODY_TIMEOUT", "30")),
            "ingest_body_timeout": _seconds("PATHWAY_INGEST_BODY_TIMEOUT", env.get("PATHWAY_INGEST_BODY_TIMEOUT", "600")),
            "loopback_subscriptions": _flag("PATHWAY_LOOPBACK_SUBSCRIPTIONS", env.get("PATHWAY_LOOPBACK_SUBSCRIPTIONS", "0")),
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
            "PATHWAY_EXPOSE_API_DOCS": "1" if self.expose_api_docs else "0",
            "PATHWAY_HEADER_TIMEOUT": str(self.header_timeout),
            "PATHWAY_BODY_TIMEOUT": str(self.body_timeout),
            "PATHWAY_INGEST_BODY_TIMEOUT": str(self.ingest_body_timeout),
            "PATHWAY_LOOPBACK_SUBSCRIPTIONS": "1" if self.loopback_subscriptions else "0",
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


def _flag(name: str, text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be 1 or 0 (true or false); got {text!r}")


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{name} must be a number of seconds above 0; got {text!r}")
    return value
