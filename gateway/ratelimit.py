"""Limits on what one caller may send: how often (a token bucket per client) and how much
(a request body size limit). Both are plain ASGI middleware and answer with an
OperationOutcome, so a refused partner system is told why and when to try again.

The rate limit is read from ``PATHWAY_RATE_LIMIT`` as ``RATE[,BURST]`` (requests
per second and bucket size, e.g. ``2000,4000``) or ``off``; with several serving
processes each keeps its share, so together they allow no more. Callers are told
apart by the client id of a valid bearer token; a request without one counts
against its remote address, so forged tokens cannot drain a real client's bucket.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth.tokens import AuthError
from gateway.fhir.outcomes import FhirError, error_response

RATE_LIMIT_ENV = "PATHWAY_RATE_LIMIT"
DEFAULT_RATE, DEFAULT_BURST = 2000.0, 4000.0
MB = 1024 * 1024
FHIR_BODY_LIMIT = 5 * MB
INGEST_BODY_LIMIT = 512 * MB  # as gateway.ingest.routes allows
UNLIMITED_PATHS = frozenset({"/healthz"})
_SWEEP_AT = 10_000  # buckets kept before idle (full) ones are forgotten


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` requests per second on average, up to ``burst`` at once."""

    rate: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> "RateLimit | None":
        """``RATE[,BURST]`` (burst defaults to twice the rate); ``off`` gives None."""
        if text.strip().lower() in ("off", "0", "none"):
            return None
        rate_text, _, burst_text = text.partition(",")
        try:
            rate = float(rate_text)
            burst = float(burst_text) if burst_text.strip() else 2 * rate
        except ValueError:
            raise ValueError(f"{RATE_LIMIT_ENV} must be RATE[,BURST] in requests per second (e.g. 2000,4000) or off; got {text!r}") from None
        if rate <= 0 or burst < 1:
            raise ValueError(f"{RATE_LIMIT_ENV} needs a rate above 0 and a burst of at least 1; got {text!r}")
        return cls(rate, burst)

    @classmethod
    def from_env(cls, processes: int = 1) -> "RateLimit | None":
        """The configured limit, as one of ``processes`` serving processes enforces it."""
        text = os.environ.get(RATE_LIMIT_ENV)
        limit = cls(DEFAULT_RATE, DEFAULT_BURST) if text is None else cls.parse(text)
        return limit and cls(limit.rate / processes, max(1.0, limit.burst / processes))


class TokenBuckets:
    """One token bucket per caller key; ``take`` answers 0 when allowed, else the seconds to wait."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.clock = limit, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: str) -> float:
        now = self.clock()
        tokens, then = self._buckets.get(key, (self.limit.burst, now))
        tokens = min(self.limit.burst, tokens + (now - then) * self.limit.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.limit.rate
        if key not in self._buckets and len(self._buckets) >= _SWEEP_AT:
            self._forget_idle(now)
        self._buckets[key] = (tokens - 1, now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        full_after = self.limit.burst / self.limit.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)


class RateLimiter:
    """Refuses a caller's requests beyond its bucket with 429, Retry-After and an OperationOutcome.

    ``client_of`` maps a bearer token to its client id, raising AuthError when it is not valid.
    """

    def __init__(self, app: ASGIApp, limit: RateLimit | None, client_of: Callable[[str], str]) -> None:
        self.app, self.client_of = app, client_of
        self.buckets = TokenBuckets(limit) if limit else None

    def caller_key(self, scope: Scope) -> str:
        scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token:
            try:
                return f"client:{self.client_of(token.strip())}"
            except AuthError:
                pass
        client = scope.get("client")
        return f"address:{client[0] if client else 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(self.caller_key(scope))
        if wait:
            retry_after = str(max(1, math.ceil(wait)))
            refusal = FhirError(429, f"too many requests from this client; try again in {retry_after} s", "throttled", headers={"Retry-After": retry_after})
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyTooLarge(FhirError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit // MB} MB", "too-long")


class InputLimits:
    """Refuses request bodies over the limit for their path with 413, and NUL characters in
    the URL with 400 (no FHIR value contains one, and PostgreSQL cannot store one), each
    with an OperationOutcome.

    A declared Content-Length over the limit is refused before anything is read;
    a body sent without one is counted as it arrives and refused when it passes the limit.
    """

    def __init__(self, app: ASGIApp, default: int = FHIR_BODY_LIMIT, by_prefix: dict[str, int] | None = None) -> None:
        self.app, self.default = app, default
        self.by_prefix = {"/ingest": INGEST_BODY_LIMIT} if by_prefix is None else by_prefix

    def limit_for(self, path: str) -> int:
        return next((limit for prefix, limit in self.by_prefix.items() if path.startswith(prefix)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await error_response(FhirError(400, "the URL contains a NUL character (%00), which no value may hold", "invalid"))(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            refusal = BodyTooLarge(limit) if declared.isdigit() else FhirError(400, "Content-Length is not a number", "structure")
            await error_response(refusal)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)
