"""Plain routes: requests for endpoints that need nothing from FastAPI but their path
parameters go straight to the endpoint.

FastAPI matches each request against every included router in turn, keeping per-router
context in the scope, and then solves the route's dependencies: on a consent-filtered read
that was over a quarter of the server's CPU. The hottest endpoints (FHIR read and search,
``$decide``) already take only the request and their path parameters and return a
``Response``; for those, :class:`PlainRoutes` matches the path against the same routes in
the same order (so precedence is FastAPI's own) and awaits the endpoint directly. Anything
else, including a request whose first matching route is not plain, a method that only
partially matches (FastAPI answers 405) and every unknown path, goes to FastAPI unchanged.
Errors go to the application's own exception handlers, as FastAPI would send them.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send


def is_plain(route: BaseRoute) -> bool:
    """Whether FastAPI does nothing for ``route`` but pass the request and its path
    parameters (as strings) and send the ``Response`` the endpoint returns."""
    if not isinstance(route, APIRoute):
        return False
    dependant = route.dependant
    if dependant.dependencies or dependant.query_params or dependant.header_params or dependant.cookie_params or dependant.body_params:
        return False
    if dependant.request_param_name is None or dependant.background_tasks_param_name or dependant.response_param_name:
        return False
    if any(param.field_info.annotation is not str for param in dependant.path_params):
        return False
    hints = typing.get_type_hints(route.endpoint)
    returned = hints.get("return")
    names = set(inspect.signature(route.endpoint).parameters)
    return (
        inspect.iscoroutinefunction(route.endpoint)
        and inspect.isclass(returned)
        and issubclass(returned, Response)
        and names == {dependant.request_param_name, *(param.name for param in dependant.path_params)}
    )


class PlainRoutes:
    """ASGI middleware dispatching plain routes (see the module's docstring) itself."""

    def __init__(self, app: ASGIApp, application: FastAPI, routes: Iterable[BaseRoute]) -> None:
        """``routes``: every route of ``application`` that could match an API path, in the
        order FastAPI tries them."""
        self.app, self.application = app, application
        entries = [(route, route.path_regex, route.methods or frozenset(), is_plain(route)) for route in routes if isinstance(route, Route)]
        # Candidates by the path's first segment, in FastAPI's order; a route whose first
        # segment is a parameter is a candidate for every path.
        self._wild = [entry for entry in entries if "{" in _head(entry[0].path)]
        heads = {_head(entry[0].path) for entry in entries} - {_head(entry[0].path) for entry in self._wild}
        self._by_head = {head: [e for e in entries if _head(e[0].path) == head or e in self._wild] for head in heads}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = self._match(scope)
            if found is not None:
                await self._dispatch(scope, receive, send, *found)
                return
        await self.app(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[Route, dict[str, str]] | None:
        """The first route to match the path and method fully, if it is plain."""
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        method = scope["method"]
        for route, regex, methods, plain in self._by_head.get(_head(path), self._wild):
            matched = regex.match(path)
            if matched is not None and method in methods:
                return (route, {name: route.param_convertors[name].convert(value) for name, value in matched.groupdict().items()}) if plain else None
        return None

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, route: Route, params: dict[str, str]) -> None:
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, params
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request, **params)
        except Exception as failure:
            response = await self._handled(request, failure)
        await response(scope, receive, send)

    async def _handled(self, request: Request, failure: Exception) -> Response:
        """The application's own answer to ``failure``: its handler for the nearest class."""
        handlers = self.application.exception_handlers
        for kind in type(failure).__mro__:
            handler = handlers.get(kind)
            if handler is not None:
                return await handler(request, failure)  # type: ignore[no-any-return]
        raise failure


def _head(path: str) -> str:
    """A path's first segment ("/fhir/Patient/1" -> "fhir")."""
    return path[1:].split("/", 1)[0]
