"""CEL expressions, compiled once at load and evaluated against ``event``, ``contact`` and ``now``.

Evaluation binds variables lazily through a ``Scope``: converting a Python mapping into CEL
values is the expensive part, so only the variables an expression reads are converted, and of
``event`` and ``contact`` only the top-level fields it can reach (see ``_reachable``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cel

VARIABLES = ("event", "contact", "now")
# Variables that are maps whose unread fields need not be converted.
PROJECTED = ("event", "contact")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELD = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\()?")


class ExprError(Exception):
    """An expression failed at run time (missing field, type mismatch, bad conversion)."""


class ExprSyntaxError(Exception):
    """An expression cannot be compiled; raised at load time."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reachable(source: str, name: str) -> frozenset[str] | None:
    """The top-level fields of variable ``name`` that ``source`` can read, or ``None`` for all.

    Not a parser: a conservative scan. Every occurrence of the identifier that is not itself a
    field (``x.contact``) must be followed by ``.field`` that is not a method call; anything
    else (the bare map, ``contact["x"]``, ``contact.all(...)``, the word inside a string
    literal) means the whole variable is bound. A field named only inside a string literal is
    merely bound needlessly. So a projection never hides a field the expression reads.
    """
    fields: set[str] = set()
    for match in _IDENT.finditer(source):
        if match.group() != name:
            continue
        before = source[: match.start()].rstrip()
        if before.endswith("."):
            continue  # a field of something else (event.data.contact)
        field = _FIELD.match(source, match.end())
        if field is None or field.group(2) is not None:
            return None
        fields.add(field.group(1))
    return frozenset(fields)


def _project(value: Any, fields: frozenset[str] | None) -> Any:
    if fields is None or not isinstance(value, Mapping):
        return value
    return {k: value[k] for k in fields if k in value}


class Scope:
    """The variables of one evaluation, converted to CEL at most once each.

    Converting a Python mapping into CEL values is the expensive part of an evaluation, so a
    variable is converted the first time an expression reads it and reused by every other
    expression evaluated in the same scope; variables nobody reads are never converted, and
    of ``event``/``contact`` only the fields the expressions so far can reach. An expression
    that reaches further rebinds the variable with the union.
    """

    __slots__ = ("_bound", "_context", "_values")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self._context = cel.Context()
        # name -> the fields bound (``None``: the whole value); absent: not bound yet.
        self._bound: dict[str, frozenset[str] | None] = {}

    def set(self, name: str, value: Any) -> None:
        """Replace a variable (e.g. the contact after a segment was assigned)."""
        self._values[name] = value
        self._bound.pop(name, None)

    def context(
        self,
        names: frozenset[str],
        fields: Mapping[str, frozenset[str] | None] | None = None,
    ) -> Any:
        for name in names:
            wanted = fields.get(name) if fields is not None else None
            if name in self._bound:
                have = self._bound[name]
                if have is None or (wanted is not None and wanted <= have):
                    continue
                wanted = None if wanted is None else wanted | have
            if name in self._values:
                self._context.add_variable(name, _project(self._values[name], wanted))
            self._bound[name] = wanted
        return self._context


@dataclass(frozen=True, slots=True)
class Expr:
    source: str
    program: Any
    names: frozenset[str]
    # For ``event``/``contact``: the top-level fields the expression can read (None: all).
    fields: Mapping[str, frozenset[str] | None]

    @classmethod
    def compile(cls, source: str) -> Expr:
        if not source.strip():
            raise ExprSyntaxError("empty expression")
        try:
            program = cel.compile(source)
        except Exception as exc:  # the binding raises ValueError with the parser's message
            raise ExprSyntaxError(str(exc).strip()) from None
        names = frozenset(program.variables()) & frozenset(VARIABLES)
        fields = {name: _reachable(source, name) for name in PROJECTED if name in names}
        return cls(source, program, names, fields)

    def evaluate(self, scope: Scope | Mapping[str, Any]) -> Any:
        if not isinstance(scope, Scope):
            scope = Scope(scope)
        try:
            return self.program.execute(scope.context(self.names, self.fields))
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
