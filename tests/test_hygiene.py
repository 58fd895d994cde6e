"""Test hygiene: tests wait on conditions, not on the wall clock.

A test that sleeps "long enough" and then looks measures the machine, not the
code: flaky on a loaded machine, slow everywhere else. Tests wait with
:func:`peregrine_rt.testing.wait_until`, ``trio.testing.wait_all_tasks_blocked()``
or the ``autojump_clock``. A few real-time sleeps remain where a real process,
socket or Redis must be paced or given time; this counts them and fails when
there are more than :data:`BUDGET`.

What is counted: every call of ``trio.sleep``, ``time.sleep`` or
``asyncio.sleep`` whose argument is not the literal ``0``, inside a test
function (nested functions and classes included) or inside a module-level
helper function of ``tests/``. Not counted:

* calls inside a function that takes the ``autojump_clock`` fixture (or
  nested in one): virtual time, free;
* methods of module-level classes: those are apps and handlers standing in
  for the code under test (a handler that takes a second to answer, a
  background task that ticks), whose pacing is the behaviour being tested,
  not a test waiting;
* the modules of :data:`EXEMPT`, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BUDGET = 12  # the 11th: a nick claim lapsing on Redis's own (real-time) TTL; the
# 12th: the Sentinel failover test's posting pace (real processes, real time), a
# method of its old client class before the chat moved to Channels, a helper now
SLEEPS = {("trio", "sleep"), ("time", "sleep"), ("asyncio", "sleep")}
EXEMPT = {
    "autobahn/run_autobahn.py": (
        "a standalone script (not collected) that polls a server it starts for the"
        " external Autobahn fuzzing client"
    ),
}

_Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _takes_autojump_clock(node: _Scope) -> bool:
    if isinstance(node, ast.ClassDef):
        return False
    arguments = node.args
    return any(a.arg == "autojump_clock" for a in [*arguments.args, *arguments.kwonlyargs])


def _is_real_sleep(node: ast.Call) -> bool:
    if not isinstance(node.func, ast.Attribute):
        return False
    target = node.func.value
    if not (isinstance(target, ast.Name) and (target.id, node.func.attr) in SLEEPS):
        return False
    argument = node.args[0] if node.args else None
    return not (isinstance(argument, ast.Constant) and argument.value == 0)


def real_time_sleeps(source: str) -> list[str]:
    """The counted sleep calls of one module, as ``line N in qualname: call`` strings."""
    found: list[str] = []

    def visit(node: ast.AST, scopes: list[_Scope]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scopes = [*scopes, node]
        if (
            isinstance(node, ast.Call)
            and _is_real_sleep(node)
            and scopes
            and not isinstance(scopes[0], ast.ClassDef)
            and not any(_takes_autojump_clock(scope) for scope in scopes)
        ):
            where = ".".join(scope.name for scope in scopes)
            found.append(f"line {node.lineno} in {where}: {ast.unparse(node)}")
        for child in ast.iter_child_nodes(node):
            visit(child, scopes)

    visit(ast.parse(source), [])
    return found


def test_the_counter_counts_what_it_should() -> None:
    source = """
import asyncio, time, trio

async def test_waits():
    await trio.sleep(0.1)
    await trio.sleep(0)
    time.sleep(1)

    class Nested:
        async def handle(self):
            await asyncio.sleep(0.5)

async def helper(delay):
    await trio.sleep(delay)

async def test_virtual(autojump_clock):
    await trio.sleep(60)

    async def inner():
        await trio.sleep(1)

class App:
    async def handle(self):
        await trio.sleep(1)

await_at_module_level = None
"""
    assert real_time_sleeps(source) == [
        "line 5 in test_waits: trio.sleep(0.1)",
        "line 7 in test_waits: time.sleep(1)",
        "line 11 in test_waits.Nested.handle: asyncio.sleep(0.5)",
        "line 14 in helper: trio.sleep(delay)",
    ]


def test_real_time_sleeps_in_tests_stay_within_the_budget() -> None:
    paths = sorted(TESTS.rglob("*.py"))
    assert len(paths) > 20, "the walk found almost no test modules: is it looking in tests/?"
    found = []
    for path in paths:
        relative = path.relative_to(TESTS).as_posix()
        if relative in EXEMPT:
            continue
        found += [f"tests/{relative}, {site}" for site in real_time_sleeps(path.read_text())]
    assert len(found) <= BUDGET, (
        f"{len(found)} real-time sleeps in tests (at most {BUDGET}): wait on a condition"
        " instead (peregrine_rt.testing.wait_until, trio.testing.wait_all_tasks_blocked,"
        " the autojump_clock fixture):\n" + "\n".join(found)
    )
