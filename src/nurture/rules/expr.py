"""CEL expressions, compiled once at load and evaluated against ``event``, ``contact`` and ``now``.

Evaluation binds variables lazily through a resolver: converting a Python mapping into CEL
values is the expensive part, so only the variables an expression actually reads are converted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cel

VARIABLES = ("event", "contact", "now")


class ExprError(Exception):
    """An expression failed at run time (missing field, type mismatch, bad conversion)."""


class ExprSyntaxError(Exception):
    """An expression cannot be compiled; raised at load time."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Scope:
    """The variables of one evaluation, converted to CEL at most once each.

    Converting a Python mapping into CEL values is the expensive part of an evaluation, so a
    variable is converted the first time an expression reads it and reused by every other
    expression evaluated in the same scope; variables nobody reads are never converted.
    """

    __slots__ = ("_bound", "_context", "_values")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self._context = cel.Context()
        self._bound: set[str] = set()

    def set(self, name: str, value: Any) -> None:
        """Replace a variable (e.g. the contact after a segment was assigned)."""
        self._values[name] = value
        self._bound.discard(name)

    def context(self, names: frozenset[str]) -> Any:
        for name in names - self._bound:
            if name in self._values:
                self._context.add_variable(name, self._values[name])
            self._bound.add(name)
        return self._context


@dataclass(frozen=True, slots=True)
class Expr:
    source: str
    program: Any
    names: frozenset[str]

    @classmethod
    def compile(cls, source: str) -> Expr:
        if not source.strip():
            raise ExprSyntaxError("empty expression")
        try:
            program = cel.compile(source)
        except Exception as exc:  # the binding raises ValueError with the parser's message
            raise ExprSyntaxError(str(exc).strip()) from None
        return cls(source, program, frozenset(program.variables()) & frozenset(VARIABLES))

    def evaluate(self, scope: Scope | Mapping[str, Any]) -> Any:
        if not isinstance(scope, Scope):
            scope = Scope(scope)
        try:
            return self.program.execute(scope.context(self.names))
        except Exception as exc:  # KeyError, TypeError, RuntimeError ... from the extension
            raise ExprError(_describe(exc)) from None

    def test(self, scope: Scope | Mapping[str, Any]) -> bool:
        """A condition: anything but a boolean is an error, never a silent truthiness test."""
        value = self.evaluate(scope)
        if not isinstance(value, bool):
            raise ExprError(f"condition returned {type(value).__name__}, not a boolean")
        return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]!r} (test presence with has())"
    return f"{type(exc).__name__}: {_first_line(exc)}"
