"""Console sign-in: accounts, password checks and server-side sessions.

The session layer only needs an :class:`Identity`. Today a password check
produces it; an OpenID Connect provider can replace that step (its callback
maps the verified ID token's claims to an Identity and calls
:func:`open_session`) without changing anything else in the console.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gateway.console.models import ConsoleAccountRow, ConsoleSessionRow, ConsoleSignInThrottleRow
from gateway.store.repository import now_utc

IG_OFFICER = "ig-officer"
PARTNERSHIP_LEAD = "partnership-lead"
# A party's data protection officer reviews agreements, its senior officer signs them, each
# for the organisation of their account only.
DPO = "dpo"
SENIOR_OFFICER = "senior-officer"
CONSOLE_ROLES = frozenset({IG_OFFICER, PARTNERSHIP_LEAD, DPO, SENIOR_OFFICER})
SESSION_HOURS = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Identity:
    """Who is signed in, whichever way they proved it."""

    username: str
    display_name: str
    organization: str  # "system|value"
    roles: frozenset[str]
    client_id: str | None = None

    def has(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class SignedIn:
    """An open session: the identity and the CSRF token its forms must carry."""

    identity: Identity
    csrf: str


class IdentityProvider(Protocol):
    def authenticate(self, session: Session, username: str, password: str) -> Identity | None:
        """The identity for these credentials, or None when they do not match."""


def hash_password(password: str) -> str:
    """A salted scrypt hash, stored as ``scrypt$salt$digest`` (hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    scheme, _, rest = stored.partition("$")
    salt, _, digest = rest.partition("$")
    if scheme != "scrypt" or not salt or not digest:
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


def identity_of(account: ConsoleAccountRow) -> Identity:
    return Identity(account.username, account.display_name, account.organization, frozenset(account.roles.split()), account.client_id)


class PasswordCheck:
    """The demo identity provider: accounts with a scrypt password hash."""

    def authenticate(self, session: Session, username: str, password: str) -> Identity | None:
        account = session.get(ConsoleAccountRow, username.strip())
        if account is None or not account.active or not account.password_hash:
            hash_password(password)  # spend the same time whether or not the account exists
            return None
        return identity_of(account) if password_matches(password, account.password_hash) else None


def save_account(
    session: Session,
    username: str,
    *,
    display_name: str,
    organization: str,
    roles: list[str],
    client_id: str | None = None,
    password: str | None = None,
) -> ConsoleAccountRow:
    """Create or update a console account; roles must be console roles."""
    unknown = set(roles) - CONSOLE_ROLES
    if unknown or not roles:
        raise ValueError(f"console roles must be some of {sorted(CONSOLE_ROLES)}, not {sorted(unknown) or 'none'}")
    account = session.get(ConsoleAccountRow, username) or ConsoleAccountRow(username=username, created=now_utc(), active=True)
    account.display_name, account.organization, account.roles, account.client_id = display_name, organization, " ".join(sorted(roles)), client_id
    if password is not None:
        account.password_hash = hash_password(password)
    session.add(account)
    return account


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, identity: Identity, hours: int = SESSION_HOURS) -> tuple[str, SignedIn]:
    """Start a session for ``identity``; returns the cookie token and the session."""
    token, csrf, moment = secrets.token_urlsafe(32), secrets.token_urlsafe(32), now_utc()
    session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires <= moment))
    session.add(ConsoleSessionRow(token_hash=_token_hash(token), username=identity.username, csrf=csrf, created=moment, expires=moment + timedelta(hours=hours)))
    return token, SignedIn(identity, csrf)


def resume_session(session: Session, token: str) -> SignedIn | None:
    """The live session behind a cookie token, or None (unknown, expired, or account disabled)."""
    row = session.get(ConsoleSessionRow, _token_hash(token)) if token else None
    if row is None or row.expires <= now_utc():
        return None
    account = session.get(ConsoleAccountRow, row.username)
    if account is None or not account.active:
        return None
    return SignedIn(identity_of(account), row.csrf)


def close_session(session: Session, token: str) -> None:
    session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.token_hash == _token_hash(token)))


THROTTLE = ConsoleSignInThrottleRow


@dataclass(frozen=True)
class SignInThrottle:
    """Brute-force protection for password sign-in, shared by every serving process.

    After ``account_limit`` failures for one username, or ``address_limit`` from one
    client address, within ``window``, that username or address is locked for
    ``lockout``: every sign-in through it is refused, the right password too, without
    the password being checked. Attempts refused while locked are not counted, so a
    lockout ends on time however often someone keeps trying.
    """

    account_limit: int = 5
    address_limit: int = 20
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)

    def _limits(self, username: str, address: str) -> dict[str, int]:
        return {_account_key(username): self.account_limit, f"address:{address[:100]}": self.address_limit}

    def locked(self, session: Session, username: str, address: str) -> str | None:
        """The key (``account:...`` or ``address:...``) under lockout now, if any."""
        keys = list(self._limits(username, address))
        since = now_utc() - self.lockout
        return session.scalar(select(THROTTLE.key).where(THROTTLE.key.in_(keys), THROTTLE.kind == "lockout", THROTTLE.at > since).limit(1))

    def failed(self, session: Session, username: str, address: str) -> list[str]:
        """Count a failed sign-in; returns the keys this failure locked."""
        moment = now_utc()
        limits = self._limits(username, address)
        session.execute(delete(THROTTLE).where(THROTTLE.at <= moment - max(self.window, self.lockout)))
        session.add_all([THROTTLE(key=key, kind="failure", at=moment) for key in limits])
        session.flush()
        counts = select(THROTTLE.key, func.count()).where(THROTTLE.key.in_(list(limits)), THROTTLE.kind == "failure", THROTTLE.at > moment - self.window).group_by(THROTTLE.key)
        locked = [key for key, count in session.execute(counts) if count >= limits[key]]
        session.add_all([THROTTLE(key=key, kind="lockout", at=moment) for key in locked])
        return locked

    def succeeded(self, session: Session, username: str) -> None:
        """A sign-in worked: the account's failures no longer count (its address's still do)."""
        session.execute(delete(THROTTLE).where(THROTTLE.key == _account_key(username), THROTTLE.kind == "failure"))


def _account_key(username: str) -> str:
    return f"account:{username.strip()[:100]}"


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())
