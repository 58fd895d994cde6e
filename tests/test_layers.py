"""The package's layers import downward only, and modules keep to their size.

The rule (docs/design.rst draws it):

    sans-IO core (``_http``, exceptions)
      <- foundations (config, handler checks, frames, JSON, loader...)
      <- transports and response heads
      <- the send path, requests and responses
      <- the connection
      <- WebSockets
      <- the realtime layer (hub, Redis hub, SSE, mixins) and static files
      <- the server
      <- workers and the command line
      <- the package's face (``__init__``, ``testing``)

A module may import modules of its own layer or below, never above, at load
time or inside a function, with the few plug-in points listed in
``PLUG_INS`` (each with its reason).  Imports under ``if TYPE_CHECKING:`` do
not count: annotations may name anything.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "peregrine_rt"

LAYERS: list[tuple[str, set[str]]] = [
    ("sans-IO core", {"_http", "exceptions"}),
    (
        "foundations",
        {
            "_config",
            "_deflate",
            "_fdlimit",
            "_forms",
            "_frames",
            "_gc",
            "_handler",
            "_json",
            "_lag",
            "_loader",
            "_logfmt",
            "_metrics",
            "_mime",
            "_options",
            "_threads",
            "_poller",
            "_trim",
            "_validators",
            "_wsconn",
            "handlers",
        },
    ),
    ("transports and heads", {"_transport", "_batch", "_files", "_answers"}),
    ("send path, request, response", {"_outbox", "_request", "_response"}),
    ("connection", {"_connection", "_admission", "_access"}),
    ("websocket", {"websocket", "_upgrade", "_receiver"}),
    (
        "realtime and static files",
        {"_hub", "_redis_hub", "_redis_url", "_sse", "mixins", "_static", "_browser"},
    ),
    (
        "web basics",
        {"_routing", "_middleware", "_cors", "_compress", "_sessions", "_auth", "asgi", "_asgi"},
    ),
    (
        "channels",
        {
            "_channels",
            "client",
            "_client_channel",
            "_client_presence",
            "_client_transport",
            "_client_types",
        },
    ),
    ("server", {"_server", "_ops", "_status"}),
    ("workers and CLI", {"_workers", "_cli", "_run", "_settings"}),
    ("the package's face", {"__init__", "__main__", "testing"}),
]

RANK = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}

# (importer, imported): an upward import done inside a function, on purpose.
PLUG_INS = {
    ("_response", "_static"): "Response.file() plugs static files in, imported on first use",
    ("_response", "_sse"): "Response.sse() plugs Server-Sent Events in, imported on first use",
}

MAX_LINES = 650  # per module; the C accelerator aside
MAX_PRIVATE_READS = 15  # reads of another object's _names across the package (was 55)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _top(path: Path) -> str:
    """The layer key of a module: its first component below the package."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            return True
    return False


def _imports(path: Path) -> list[tuple[str, int]]:
    """The package modules ``path`` imports (outside TYPE_CHECKING), with line numbers."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    here = path.relative_to(PACKAGE).parent.parts
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or _in_type_checking(node, parents):
            continue
        if node.level == 0:
            if not (node.module or "").startswith("peregrine_rt"):
                continue
            target = (node.module or "").split(".")[1:]
        else:
            base = list(here[: len(here) - (node.level - 1)]) if node.level > 1 else list(here)
            target = base + (node.module.split(".") if node.module else [])
        if not target:  # "from . import x": x is a module of this package
            names = [alias.name for alias in node.names]
            found += [(name, node.lineno) for name in names]
        else:
            found.append((target[0], node.lineno))
    return found


def test_every_module_has_a_layer() -> None:
    missing = {_top(p) for p in _modules()} - set(RANK)
    assert not missing, f"give these modules a layer in LAYERS: {sorted(missing)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward(path: Path) -> None:
    importer = _top(path)
    wrong = []
    for imported, line in _imports(path):
        if imported not in RANK or imported == importer:
            continue
        if RANK[imported] > RANK[importer] and (importer, imported) not in PLUG_INS:
            wrong.append(
                f"{path.name}:{line} imports {imported} "
                f"({LAYERS[RANK[imported]][0]}, above {LAYERS[RANK[importer]][0]})"
            )
    assert not wrong, "\n".join(wrong)


def test_plug_ins_are_imported_lazily_and_still_exist() -> None:
    """A plug-in import is inside a function (never at load), and each listed one is real."""
    for importer, imported in PLUG_INS:
        path = PACKAGE / f"{importer}.py"
        tree = ast.parse(path.read_text())
        top_level = {
            n.module.lstrip(".") if n.module else ""
            for n in tree.body
            if isinstance(n, ast.ImportFrom)
        }
        assert imported not in top_level, f"{importer} imports {imported} at load time"
        assert imported in {name for name, _ in _imports(path)}, f"stale plug-in {importer}"


def test_the_layer_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward import in a module is reported (the test can fail)."""
    fake = PACKAGE / "_transport.py"
    source = fake.read_text() + "\nfrom ._server import Server\n"
    copy = tmp_path / "peregrine_rt" / "_transport.py"
    copy.parent.mkdir()
    copy.write_text(source)
    imported = {name for name, _ in _imports_from(copy, tmp_path / "peregrine_rt")}
    assert "_server" in imported and RANK["_server"] > RANK["_transport"]


def _imports_from(path: Path, package: Path) -> list[tuple[str, int]]:
    global PACKAGE
    saved, PACKAGE = PACKAGE, package
    try:
        return _imports(path)
    finally:
        PACKAGE = saved


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines (at most {MAX_LINES})"


def _private_reads() -> list[str]:
    """Attribute reads of ``_name`` on objects other than ``self``/``cls``."""
    reads = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                reads.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    return reads


def test_few_reads_of_other_objects_private_names() -> None:
    reads = _private_reads()
    assert len(reads) <= MAX_PRIVATE_READS, "\n".join(reads)


def test_no_wsproto_private_state() -> None:
    """wsproto is used through its public API only, so a release cannot break us silently."""
    wsproto_private = {"_proto", "_events", "_frame_decoder", "_message_decoder", "_deflater"}
    touched = [r for r in _private_reads() if r.rsplit(".", 1)[-1] in wsproto_private]
    assert not touched, touched


def test_the_design_page_draws_these_layers() -> None:
    """docs/design.rst's table lists the same layers, top first, with the same modules."""
    page = (PACKAGE.parent / "docs" / "design.rst").read_text()
    table = page.split("   * - layer\n     - modules\n", 1)[1].split("\n\n", 1)[0]
    rows = []
    for row in table.split("   * - ")[1:]:
        name, _, modules = row.partition("\n     - ")
        rows.append((name.strip(), set(re.findall(r"``(\w+)``", modules))))
    assert rows == list(reversed(LAYERS))
