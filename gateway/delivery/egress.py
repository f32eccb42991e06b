"""Where webhook POSTs may go: every connection the delivery worker opens (notifications,
handshakes, heartbeats) resolves the endpoint's name once, refuses it if any address it
resolves to is internal, and connects to one of exactly those addresses.

Checking the literal host when a Subscription is made (``webhook_url``) cannot see what a name
resolves to, nor a name that resolves elsewhere by the time it is used (DNS rebinding): the
check has to be on the address the socket connects to. The URL keeps its name, so the Host
header, TLS SNI, certificate verification and the connection pool's keys stay those of the
name; only the TCP connect goes to the checked address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

import httpcore
import httpx

# (host, port) -> the addresses to connect to, in order
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system's resolver gives for ``host`` (each once)."""
    return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))


def is_internal(address: str, *, allow_loopback: bool) -> bool:
    """Whether the gateway must not connect to ``address``: anything not globally routable
    (private, loopback, link-local, shared, unspecified, reserved, documentation) or multicast;
    loopback only when allowed. IPv4-mapped IPv6 addresses count as their IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is not part of the address
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if ip.is_loopback:
        return not allow_loopback
    return not ip.is_global or ip.is_multicast


class InternalAddress(Exception):
    """The endpoint's name resolves to an internal address: nothing is sent, nothing retried."""

    def __init__(self, address: str) -> None:
        super().__init__(f"the endpoint's name resolves to an internal address {address}")
        self.address = address


class _CheckedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, connecting only to checked addresses of the name."""

    def __init__(self, allow_loopback: bool, resolve: Resolver) -> None:
        self._sockets = httpcore.SyncBackend()
        self._allow_loopback = allow_loopback
        self._resolve = resolve

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._resolve(host, port)
        except OSError as error:  # e.g. the name does not exist: a connection failure like any other
            raise httpcore.ConnectError(f"{host} could not be resolved: {error}") from None
        refused = next((a for a in addresses if is_internal(a, allow_loopback=self._allow_loopback)), None)
        if refused is not None:
            raise InternalAddress(refused)
        failure: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return self._sockets.connect_tcp(address, port, timeout=timeout, local_address=local_address, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are not sent over unix sockets")

    def sleep(self, seconds: float) -> None:
        self._sockets.sleep(seconds)


class CheckedTransport(httpx.HTTPTransport):
    """An HTTP transport whose every TCP connection goes to a resolved, checked address.

    Environment proxies are not used (an explicit transport turns them off in httpx): the
    worker connects directly, so that it is the gateway that checks where it connects.
    """

    def __init__(self, *, allow_loopback: bool, limits: httpx.Limits, resolve: Resolver = system_resolver) -> None:
        super().__init__(limits=limits)
        # httpx takes no network backend; handle_request sends through this pool only.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CheckedBackend(allow_loopback, resolve),
        )


def checked_client(*, allow_loopback: bool, limits: httpx.Limits, resolve: Resolver = system_resolver) -> httpx.Client:
    """An httpx client for webhook POSTs (no redirects followed) through :class:`CheckedTransport`."""
    return httpx.Client(transport=CheckedTransport(allow_loopback=allow_loopback, limits=limits, resolve=resolve), follow_redirects=False)
