"""Reading configuration files and reporting their problems as ``file: where: what``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError


class ConfError(ValueError):
    """A configuration file is wrong; ``problems`` lists each as ``file: where: what``."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


_Model = TypeVar("_Model", bound=BaseModel)
Location = Sequence[int | str]


def _json_like(value: Any) -> Any:
    """YAML dates become ISO strings, so every file is validated as the JSON it stands for."""
    if isinstance(value, dict):
        return {str(k): _json_like(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_like(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _where(location: Location, document: Any) -> str:
    """``organizations[3] (rehab-x).clients[0].scopes[1]`` for a location in ``document``."""
    text, node = "", document
    for depth, step in enumerate(location):
        node = node[step] if _has(node, step) else None
        if isinstance(step, int):
            text += f"[{step}]"
            if depth == 1 and isinstance(node, dict) and isinstance(node.get("id"), str):
                text += f" ({node['id']})"
        else:
            text += f".{step}" if text else step
    return text


def _has(node: Any, step: int | str) -> bool:
    if isinstance(node, list):
        return isinstance(step, int) and 0 <= step < len(node)
    return isinstance(node, dict) and step in node


def _message(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (not part of the schema)"
    if kind == "literal_error":
        return f"{error['input']!r} is not allowed; expected {ctx['expected']}"
    return f"{error['msg']} (got {error['input']!r})"


class _File:
    """One configuration file: its parsed document and the problems found in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfError(f"{path}: file not found") from None
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            raise ConfError(f"{path}: {where}: not valid YAML: {error.problem}") from None
        if not isinstance(document, dict):
            raise ConfError(f"{path}: expected a mapping of keys at the top level")
        self.document: dict[str, Any] = _json_like(document)

    def report(self, location: Location, message: str) -> None:
        self.problems.append(f"{self.path}: {_where(location, self.document)}: {message}")

    def report_invalid(self, error: ValidationError, prefix: Location = ()) -> None:
        for problem in error.errors():
            self.report([*prefix, *problem["loc"]], _message(problem))

    def parse(self, model: type[_Model]) -> _Model | None:
        """The document as ``model``, or None with the reasons reported."""
        try:
            return model.model_validate(self.document)
        except ValidationError as error:
            self.report_invalid(error)
            return None
