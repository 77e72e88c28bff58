"""The automation pack ("automation as code"): YAML files whose top-level keys are merged.

Every ``*.yaml``/``*.yml`` file below the folder is read; each top-level key (``rules``,
``segments``, ``scoring``, ``sequences``, ``sources``, ``forms``, ``endpoints`` ...) is a section,
and a section may be spread over several files. ``templates/`` holds e-mail templates. Each
feature validates its own section into typed models; errors name the file, line and field
(``file:line: field: message``). Reads files only; imports only ``errors``.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from nurture.errors import ConfigError

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
M = TypeVar("M", bound=BaseModel)

PathKey = tuple[str | int, ...]


@dataclass
class Located:
    """One section's value from one file, with the line of every node inside it."""

    value: Any
    file: Path
    line: int
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: PathKey) -> int:
        """The line of the deepest known node on ``path`` (pydantic's ``loc``)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return self.line

    def where(self, path: PathKey = ()) -> str:
        return f"{self.file}:{self.line_of(path)}"


@dataclass
class Pack:
    root: Path
    is_default: bool
    sections: dict[str, list[Located]] = field(default_factory=dict)

    def section(self, name: str) -> list[Located]:
        return self.sections.get(name, [])

    def items(self, name: str) -> Iterator[tuple[Located, int, Any]]:
        """For list sections: ``(located, index, item)`` across every file, in file order."""
        for located in self.section(name):
            if not isinstance(located.value, list):
                raise ConfigError(f"{located.where()}: {name}: must be a list")
            for index, item in enumerate(located.value):
                yield located, index, item

    def validate_item(self, located: Located, index: int | None, model: type[M], item: Any) -> M:
        """Validate one item; a failure names file, line and field."""
        try:
            return model.model_validate(item)
        except ValidationError as exc:
            raise pack_error(located, index, exc) from None

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"


def pack_error(located: Located, index: int | None, exc: ValidationError) -> ConfigError:
    messages = []
    for err in exc.errors():
        loc: PathKey = tuple(err["loc"])
        path = (index, *loc) if index is not None else loc
        name = ".".join(str(p) for p in path) or "(root)"
        messages.append(f"{located.where(path)}: {name}: {err['msg']}")
    return ConfigError("; ".join(messages))


def _lines(node: yaml.Node, path: PathKey, out: dict[PathKey, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _lines(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def read_file(path: Path) -> dict[str, Located]:
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or node is None:
        raise ConfigError(f"{path}:1: the top level must be a mapping of sections (rules:, ...)")
    lines: dict[PathKey, int] = {}
    _lines(node, (), lines)
    out = {}
    for key, value in data.items():
        sub = {p[1:]: ln for p, ln in lines.items() if p[:1] == (key,)}
        out[str(key)] = Located(value, path, lines.get((key,), 1), sub)
    return out


def resolve_dir(configured: Path | None, cwd: Path | None = None) -> tuple[Path, bool]:
    """The folder to load and whether it is the built-in default pack.

    Unset: ``./automation`` if it exists, else the built-in pack. Set but missing: an error,
    because a typo must not silently run the defaults.
    """
    if configured is not None:
        if not configured.is_dir():
            raise ConfigError(f"NURTURE_AUTOMATION_DIR: {configured} is not a directory")
        return configured.resolve(), False
    local = (cwd or Path.cwd()) / "automation"
    if local.is_dir():
        return local.resolve(), False
    return DEFAULTS_DIR, True


# (file, mtime, size) of every YAML file a pack was read from.
Fingerprint = tuple[tuple[str, int, int], ...]
_cache: dict[tuple[Path, bool], tuple[Fingerprint, Pack]] = {}
_cache_lock = threading.Lock()


def _pack_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        if "templates" in dirs:
            dirs.remove("templates")  # template meta.yaml files belong to their template
        dirs.sort()
        files.extend(Path(folder) / n for n in names if n.endswith((".yaml", ".yml")))
    return sorted(files)


def _fingerprint(files: list[Path]) -> Fingerprint:
    stamps = []
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue  # removed meanwhile: the fingerprint differs from the read, as it should
        stamps.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(stamps)


def load_pack(configured: Path | None = None, *, cwd: Path | None = None) -> Pack:
    """The pack in ``configured`` (see ``resolve_dir``).

    Parsed packs are cached by folder and reused while none of their files changed (same names,
    modification times and sizes): start-up and the request handlers that read the pack pay a
    few ``stat`` calls instead of parsing every file again, and an edited folder is still read
    afresh at exactly the places that re-read it before. Each caller gets its own copy.
    """
    root, is_default = resolve_dir(configured, cwd)
    files = _pack_files(root)
    fingerprint = _fingerprint(files)
    cached = _cache.get((root, is_default))
    if cached is not None and cached[0] == fingerprint:
        return copy.deepcopy(cached[1])
    pack = Pack(root=root, is_default=is_default)
    for path in files:
        for key, located in read_file(path).items():
            pack.sections.setdefault(key, []).append(located)
    with _cache_lock:
        _cache[(root, is_default)] = (fingerprint, pack)
    return copy.deepcopy(pack)
