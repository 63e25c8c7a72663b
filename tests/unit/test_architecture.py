"""The package's rooms stay one-way: no import loop, no import back up the layers, no reach
into another room's private names, no module over 400 lines.

Read from the source (every import, also those inside functions and under TYPE_CHECKING),
so the picture in the README's architecture section cannot drift from the code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import otel_tokens

PACKAGE = Path(otel_tokens.__file__).parent
#: Each room (a subpackage, or a module at the top) and its floor: a room imports only
#: rooms on lower floors, and nothing of the rooms on its own floor.
FLOORS = {
    "_version": 0,
    "_base": 1,
    "_pricing": 2,
    "providers": 2,
    "_http": 3,
    "_core": 3,
    "_ledger": 4,
    "_export": 4,
    "_workers": 5,
    "_configure": 6,
    "_demo": 7,
    "httpx": 7,
    "testing": 7,
    "_cli": 8,
    "cli": 9,
    "__init__": 10,
    "__main__": 11,
}
MAX_LINES = 400


@dataclass
class Module:
    """One module of the package: its size and what it imports (module -> names)."""

    lines: int
    imports: dict[str, set[str]] = field(default_factory=dict)


def room_of(module: str) -> str:
    """`otel_tokens._core.tracker` -> `_core`; `otel_tokens` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def read_package(root: Path = PACKAGE) -> dict[str, Module]:
    """Every module of the package under `root`, with the package modules it imports."""
    found: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        parts = ["otel_tokens", *path.relative_to(root).with_suffix("").parts]
        package = parts[:-1]  # what a relative import starts from
        if parts[-1] == "__init__":
            parts = parts[:-1]
        text = path.read_text("utf-8")
        module = Module(lines=len(text.splitlines()))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    module.imports.setdefault(alias.name, set())
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                source = ".".join([*base, node.module] if node.module else base)
                for alias in node.names:
                    module.imports.setdefault(source, set()).add(alias.name)
        found[".".join(parts)] = module
    for module in found.values():  # `from otel_tokens._core import tracker` names a module
        for source, names in list(module.imports.items()):
            submodules = {name for name in names if f"{source}.{name}" in found}
            for name in submodules:
                module.imports.setdefault(f"{source}.{name}", set())
            names.difference_update(submodules)
            if submodules and not names:
                del module.imports[source]
    return found


def problems(modules: dict[str, Module], floors: dict[str, int] = FLOORS) -> list[str]:
    """What breaks the rules, one line each; empty when the package keeps them."""
    found: list[str] = []
    edges = {
        name: {target for target in module.imports if target in modules and target != name}
        for name, module in modules.items()
    }
    for name, module in sorted(modules.items()):
        room = room_of(name)
        if room not in floors:
            found.append(f"{name}: room {room!r} has no floor in FLOORS: place it")
            continue
        if module.lines > MAX_LINES:
            found.append(f"{name}: {module.lines} lines, over {MAX_LINES}: split it")
        for target in sorted(edges[name]):
            theirs = room_of(target)
            if theirs == room or theirs not in floors:
                continue
            if floors[theirs] >= floors[room]:
                found.append(
                    f"{name} imports {target}: up or across the floors ({room} -> {theirs})"
                )
            inside = target.split(".")[2:]
            private = [p for p in inside if p.startswith("_")]
            private += sorted(
                n
                for n in modules[name].imports[target]
                if n.startswith("_") and not n.endswith("__")
            )
            if private:
                found.append(f"{name} imports {target}: private to {theirs}: {', '.join(private)}")
    found += [f"import loop: {' -> '.join(loop)}" for loop in _loops(edges)]
    return found


def _loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                loops.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return loops


def test_the_package_keeps_its_rooms_one_way() -> None:
    modules = read_package()
    assert "otel_tokens._core.tracker" in modules
    assert problems(modules) == []


def test_every_room_is_on_a_floor_and_every_floor_holds_a_room() -> None:
    rooms = {room_of(name) for name in read_package()}
    assert rooms == set(FLOORS)


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        (  # a loop inside one room
            {
                "otel_tokens._core.a": Module(10, {"otel_tokens._core.b": {"B"}}),
                "otel_tokens._core.b": Module(10, {"otel_tokens._core.a": {"A"}}),
            },
            ["import loop: otel_tokens._core.a -> otel_tokens._core.b"],
        ),
        (  # the core reaching up into the ledger, for a private name
            {
                "otel_tokens._core.a": Module(10, {"otel_tokens._ledger.b": {"_put"}}),
                "otel_tokens._ledger.b": Module(10),
            },
            [
                "otel_tokens._core.a imports otel_tokens._ledger.b: up or across the floors "
                "(_core -> _ledger)",
                "otel_tokens._core.a imports otel_tokens._ledger.b: private to _ledger: _put",
            ],
        ),
        (  # a private module of another room, and a module too long
            {
                "otel_tokens._http.a": Module(401, {"otel_tokens.providers._read": {"X"}}),
                "otel_tokens.providers._read": Module(10),
            },
            [
                "otel_tokens._http.a: 401 lines, over 400: split it",
                "otel_tokens._http.a imports otel_tokens.providers._read: private to "
                "providers: _read",
            ],
        ),
        (  # a room nobody placed
            {"otel_tokens._attic.a": Module(10)},
            ["otel_tokens._attic.a: room '_attic' has no floor in FLOORS: place it"],
        ),
    ],
)
def test_the_rules_catch_what_they_forbid(modules: dict[str, Module], expected: list[str]) -> None:
    assert problems(modules) == expected


def test_modules_named_by_from_imports_are_read_as_modules(tmp_path: Path) -> None:
    room = tmp_path / "_core"
    room.mkdir()
    (tmp_path / "__init__.py").write_text("")
    (room / "__init__.py").write_text("")
    (room / "a.py").write_text("from otel_tokens._core import b as spec\n")
    (room / "b.py").write_text("def f():\n    from . import a\n")
    modules = read_package(tmp_path)
    assert set(modules["otel_tokens._core.a"].imports) == {"otel_tokens._core.b"}
    assert "otel_tokens._core.a" in modules["otel_tokens._core.b"].imports
    assert problems(modules) == ["import loop: otel_tokens._core.a -> otel_tokens._core.b"]
