"""The docs move with the code.

* Every page is in the toctree; generated pages (configuration, CLI,
  benchmark chart) are what their generators write today.
* Every public name is in the API reference.
* The snippet rule: every code block of every page is either a
  ``literalinclude`` of a file the tests run (``examples/``, ``tests/``,
  ``docs/snippets/``) or a doctest (``>>>`` blocks and the ``doctest``
  directives, run by ``sphinx-build -b doctest`` in ``make docs``).  A ``::``
  literal block or a ``code-block`` directive fails here, on any page,
  whoever wrote it.
* The files of ``docs/snippets/`` are run or checked below: Python snippets'
  ``test_*`` functions are collected into this module (so pytest-trio runs
  them, fixtures and all); shell lines, config files and quoted output each
  have a check.
"""

from __future__ import annotations

import configparser
import dataclasses
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import peregrine_rt
import peregrine_rt.testing
from peregrine_rt import _cli
from peregrine_rt._metrics import METRICS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
TOOLS = DOCS / "_tools"
PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)
GENERATORS = sorted(TOOLS.glob("gen_*.py"))


# -- pages and generated pages -------------------------------------------------


def test_pages_and_generators_are_found() -> None:
    # Guard the parametrized tests below against passing on nothing.
    assert {"index", "reference", "handlers"} <= {p.stem for p in PAGES}
    assert {"gen_config.py", "gen_cli.py", "gen_bench.py"} <= {p.name for p in GENERATORS}


@pytest.mark.parametrize("tool", GENERATORS, ids=lambda p: p.name)
def test_generated_pages_are_current(tool: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(tool), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_configuration_page_names_every_field() -> None:
    page = (DOCS / "configuration.rst").read_text()
    for f in dataclasses.fields(peregrine_rt.Config):
        assert f"``{f.name}``" in page
        assert f.metadata["doc"] in page


def test_cli_page_names_every_option() -> None:
    page = (DOCS / "cli.rst").read_text()
    documented = {
        name.split()[0]
        for line in re.findall(r"^\.\. option:: (.+)$", page, re.M)
        for name in line.split(", ")
    }
    for action in _cli._parser()._actions:
        for option in action.option_strings or [action.metavar]:
            assert option in documented, option


def test_every_page_is_in_the_toctree() -> None:
    """Every page is in the toctree of its folder's index.rst (docs/web/ has its own)."""
    for page in PAGES:
        if page.name == "index.rst" and page.parent == DOCS:
            continue
        index_path = page.parent / "index.rst" if page.name != "index.rst" else DOCS / "index.rst"
        index = index_path.read_text()
        toctrees = re.findall(r"^\.\. toctree::\n((?:[ \t]+.*\n|\n)+)", index, re.M)
        assert toctrees, f"{index_path} has no toctree"
        entries = {line.strip() for toctree in toctrees for line in toctree.splitlines()}
        name = (
            str(page.parent.relative_to(DOCS) / page.stem)
            if page.name == "index.rst"
            else page.stem
        )
        assert name in entries, f"{page.relative_to(DOCS)} is not in a toctree of {index_path}"


# -- the API reference ---------------------------------------------------------

_DOCUMENTING = re.compile(
    r"^\.\. (?:auto)?(?:class|function|exception|data|attribute|decorator)::\s+(\S+)", re.M
)


def _documented(page: str) -> set[str]:
    return {name.split("(")[0] for name in _DOCUMENTING.findall(page)}


@pytest.mark.parametrize("module", [peregrine_rt, peregrine_rt.testing], ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_reference(module: ModuleType) -> None:
    page = (DOCS / "reference.rst").read_text()
    # the section of the page that documents this module
    marker = {
        "peregrine_rt": ".. module:: peregrine_rt",
        "peregrine_rt.testing": ".. currentmodule:: peregrine_rt.testing",
    }[module.__name__]
    start = page.index(marker)
    section = page[start:]
    if module is peregrine_rt:
        section = section[: section.index(".. currentmodule:: peregrine_rt.testing")]
    missing = sorted(set(module.__all__) - _documented(section))
    assert missing == [], f"add these to docs/reference.rst: {missing}"


# -- the snippet rule ----------------------------------------------------------

# Directives that show code without running it.
FORBIDDEN_DIRECTIVES = {"code-block", "code", "sourcecode", "highlight", "include"}
# Directives whose content is run as a doctest, or that include a tested file.
_EXPLICIT = re.compile(r"^(\s*)\.\.\s+(?:([\w:-]+)::(.*))?")
_INCLUDE = re.compile(r"^\s*\.\. literalinclude::\s*(\S+)", re.M)


def code_block_violations(text: str) -> list[str]:
    """Code blocks of a reST page that are neither included nor doctests.

    Returns ``line N: why`` strings.  A literal block (a paragraph ending in
    ``::`` followed by an indented block) and the directives in
    :data:`FORBIDDEN_DIRECTIVES` are violations.  Comments are skipped.
    """
    lines = text.splitlines()
    problems: list[str] = []
    skip_deeper_than: int | None = None  # inside a comment
    for number, line in enumerate(lines, start=1):
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if not line.strip() or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        explicit = _EXPLICIT.match(line)
        if explicit:
            name = explicit.group(2)
            if name is None:  # a comment (or a target / footnote / substitution)
                skip_deeper_than = len(explicit.group(1))
            elif name in FORBIDDEN_DIRECTIVES:
                problems.append(
                    f"line {number}: a {name} directive (use literalinclude of a tested"
                    " file, or a doctest)"
                )
            continue
        if line.rstrip().endswith("::") and line.strip():
            # A literal block follows if the next non-blank line is indented deeper.
            for following in lines[number:]:
                if following.strip():
                    if len(following) - len(following.lstrip()) > indent:
                        problems.append(
                            f"line {number}: a literal block (::) (use literalinclude of a"
                            " tested file, or a doctest)"
                        )
                    break
    return problems


def test_the_snippet_rule_checker() -> None:
    # The checker itself: what it must refuse and what it must let through.
    refused = [
        "Run it::\n\n    peregrine-rt app:App\n",
        "::\n\n    x = 1\n",
        ".. code-block:: python\n\n   x = 1\n",
        ".. note::\n\n   Like this::\n\n      x = 1\n",
        "Text ::\n\n  x\n",
    ]
    allowed = [
        ".. literalinclude:: ../examples/echo.py\n   :language: python\n",
        ">>> 1 + 1\n2\n",
        ".. doctest::\n\n   >>> 1 + 1\n   2\n",
        ".. testcode::\n\n   print(1)\n\n.. testoutput::\n\n   1\n",
        ".. a comment with code::\n\n      x = 1\n",
        ".. toctree::\n   :maxdepth: 2\n\n   page\n",
        "The ``::`` in prose, and a colon: here\n\n    a block quote\n",
        ".. list-table::\n   :header-rows: 1\n\n   * - a\n",
    ]
    for text in refused:
        assert code_block_violations(text), text
    for text in allowed:
        assert code_block_violations(text) == [], text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_code_block_is_included_or_a_doctest(page: Path) -> None:
    assert code_block_violations(page.read_text()) == []


def _tested_by_the_suite(path: Path) -> bool:
    """Whether a file shown in the docs is run or checked by the tests."""
    relative = path.relative_to(ROOT)
    top = relative.parts[0]
    if top == "tests" or relative.parent == SNIPPETS.relative_to(ROOT):
        return True  # tests run themselves; snippets are run or checked below
    if top == "examples":
        # an example (module or package) is imported or named by some test
        name = relative.parts[1].removesuffix(".py")
        needles = (f"examples.{name}", f"examples/{name}")
        return any(
            any(needle in test.read_text() for needle in needles)
            for test in (ROOT / "tests").rglob("*.py")
        )
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_included_files_exist_and_are_tested(page: Path) -> None:
    for include in _INCLUDE.findall(page.read_text()):
        path = (page.parent / include).resolve()
        assert path.is_file(), f"{page.name} includes missing {include}"
        assert _tested_by_the_suite(path), (
            f"{page.name} includes {include}, which no test runs: put it in examples/ with a"
            " test, or in docs/snippets/"
        )


# -- docs/snippets: run or checked --------------------------------------------


def _load_snippet(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_snippets.{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _collect_python_snippets() -> dict[str, Any]:
    """The snippets' tests and fixtures, under names pytest collects here."""
    found: dict[str, Any] = {}
    for path in sorted(SNIPPETS.glob("*.py")):
        module = _load_snippet(path)
        for name, value in vars(module).items():
            if name.startswith("test_") and callable(value):
                found[f"test_snippet_{path.stem}__{name.removeprefix('test_')}"] = value
            elif type(value).__name__ == "FixtureFunctionDefinition" or hasattr(
                value, "_pytestfixturefunction"
            ):
                assert name not in found, f"fixture {name} defined by two snippets"
                found[name] = value
    return found


globals().update(_collect_python_snippets())


def test_every_python_snippet_has_tests() -> None:
    for path in sorted(SNIPPETS.glob("*.py")):
        assert re.search(r"^(async )?def test_", path.read_text(), re.M), (
            f"{path.name} defines no test_ function: nothing runs it"
        )


def _check_command(words: list[str]) -> None:
    """One shell command line of the docs: the programs and arguments exist."""
    program, args = words[0], words[1:]
    if program in ("peregrine-rt",) or words[:3] == ["python", "-m", "peregrine_rt"]:
        if program == "python":
            args = words[3:]
        options = _cli._parser().parse_args(args)  # exits (SystemExit) if an option is wrong
        if options.app:
            _cli.load_app(options.app)
    elif program == "pip":
        assert args[0] == "install", words
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        for requirement in args[1:]:
            if requirement.startswith("-"):
                continue
            match = re.fullmatch(r"([\w.-]+)(?:\[([\w,-]+)\])?", requirement.strip("'\""))
            assert match, requirement
            name, extras = match.groups()
            assert name in (pyproject["name"], ".", "pytest", "pytest-trio"), requirement
            for extra in (extras or "").split(","):
                assert not extra or extra in pyproject["optional-dependencies"], extra
    elif program == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in args:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"no make {target}"
    elif program in ("pytest", ".venv/bin/pytest"):
        for arg in args:
            if not arg.startswith("-"):
                assert (ROOT / arg.split("::")[0]).exists(), arg
    elif program in ("python", ".venv/bin/python"):
        assert (ROOT / args[0]).is_file(), args[0]
    elif program in ("curl", "git", "cd", "sudo", "systemctl", "wscat"):
        pass  # other programs: only the command shape is shown
    else:
        raise AssertionError(f"no check for the command {program!r}: add one to test_docs.py")


def _shell_commands(text: str) -> list[list[str]]:
    commands = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            commands.append(shlex.split(line.removeprefix("$ ")))
    return commands


def check_shell(path: Path) -> None:
    commands = _shell_commands(path.read_text())
    assert commands, f"{path.name} has no command"
    for words in commands:
        _check_command(words)


def check_systemd_unit(path: Path) -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string(path.read_text())
    service = unit["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert Path(exec_start[0]).name == "peregrine-rt", exec_start
    _check_command(["peregrine-rt", *exec_start[1:]])
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
    grace = _cli._parser().parse_args(exec_start[1:]).shutdown_grace
    stop = float(service["TimeoutStopSec"].removesuffix("s"))
    assert stop > grace, "systemd would kill the server before its shutdown grace ends"


def check_nginx(path: Path) -> None:
    text = path.read_text()
    upstream = re.search(r"proxy_pass http://([\d.]+):(\d+)", text)
    assert upstream, "no proxy_pass"
    defaults = peregrine_rt.Config()
    assert upstream.groups() == (defaults.host, str(defaults.port))
    for needed in ("proxy_http_version 1.1", "Upgrade $http_upgrade", "Connection $connection"):
        assert needed in text, needed
    assert text.count("{") == text.count("}")


def check_toml(path: Path) -> None:
    shown = tomllib.loads(path.read_text())
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())

    def same(shown: dict[str, Any], ours: dict[str, Any]) -> None:
        for key, value in shown.items():
            assert key in ours, key
            if isinstance(value, dict):
                same(value, ours[key])
            else:
                assert value == ours[key], key

    same(shown, ours)  # the project's own configuration does what the page says


def _served_metric(name: str) -> bool:
    """Whether /metrics serves a series named ``name`` (a histogram's suffixes too)."""
    for info in METRICS:
        suffixes = ("_bucket", "_count", "_sum") if info.kind == "histogram" else ("",)
        if name in {info.name + suffix for suffix in suffixes}:
            return True
    return False


def check_yaml(path: Path) -> None:
    """The operations page's YAML: metric names, labels, paths and options that exist."""
    text = path.read_text()
    names = set(re.findall(r"\bperegrine_[a-z_]+", text)) - {"peregrine_rt"}
    for name in names:
        assert _served_metric(name), f"{path.name}: /metrics serves no {name}"
    labels = {label for info in METRICS for label in info.labels} | {"le", "instance"}
    for used in re.findall(r"\{([a-z_]+)=", text) + re.findall(r"by \(([a-z_, ]+)\)", text):
        for label in used.split(","):
            assert label.strip() in labels, f"{path.name}: no metric has the label {label}"
    prefix = peregrine_rt.Config().ops_prefix
    for path_shown in re.findall(r"path: (/\w+)", text) + re.findall(r"metrics_path: (/\w+)", text):
        assert path_shown in (f"{prefix}/metrics", f"{prefix}/healthz", f"{prefix}/readyz")
    args = re.search(r"args: (\[.*?\])", text, re.S)
    if args is not None:  # a container's command line
        words = [w.strip(' "\n') for w in args.group(1).strip("[]").split(",")]
        _check_command(words)
    scraped = re.findall(r"metrics_path: (\S+)", text)
    assert names or args or scraped, f"{path.name} shows no metric, command or scrape path"


CHECKS = {
    ".yml": check_yaml,
    ".sh": check_shell,
    ".service": check_systemd_unit,
    ".conf": check_nginx,
    ".toml": check_toml,
}


def _snippet_files() -> list[Path]:
    return sorted(
        p for p in SNIPPETS.iterdir() if p.is_file() and p.suffix != ".pyc" and p.name[0] != "."
    )


@pytest.mark.parametrize(
    "path", [p for p in _snippet_files() if p.suffix != ".py"], ids=lambda p: p.name
)
def test_snippet_file_is_checked(path: Path) -> None:
    """Every non-Python snippet has a check: by its suffix, or a .py of the same stem."""
    if path.suffix in CHECKS:
        CHECKS[path.suffix](path)
    else:
        checker = path.with_suffix(".py")
        assert checker.is_file(), f"nothing checks {path.name}: add a {checker.name} with tests"
        assert path.name in checker.read_text(), f"{checker.name} does not read {path.name}"


def test_the_yaml_checker_refuses_what_does_not_exist(tmp_path: Path) -> None:
    bad = {
        "expr: peregrine_requests_total > 1\n": "serves no",
        'expr: peregrine_ws_closes_total{reason="x"}\n': "label",
        "expr: peregrine_redis_up\nhttpGet: {path: /health, port: 9}\n": "",
        'args: ["peregrine-rt", "--no-such-option"]\n': "",
    }
    for text, why in bad.items():
        path = tmp_path / "x.yml"
        path.write_text(text)
        with pytest.raises((AssertionError, SystemExit), match=why or None):
            check_yaml(path)
    path.write_text("expr: rate(peregrine_http_request_duration_seconds_bucket[5m])\n")
    check_yaml(path)


def test_every_snippet_is_shown_in_the_docs() -> None:
    shown = "\n".join(p.read_text() for p in PAGES)
    for path in _snippet_files():
        if path.suffix == ".py" and path.with_suffix(".txt").exists():
            continue  # the checker of a quoted-output snippet
        assert f"snippets/{path.name}" in shown, f"docs/snippets/{path.name} is shown nowhere"


# -- the link checker -----------------------------------------------------------


def test_link_checker_finds_broken_links(tmp_path: Path) -> None:
    sys.path.insert(0, str(TOOLS))
    try:
        import check_links
    finally:
        sys.path.remove(str(TOOLS))
    (tmp_path / "a.html").write_text(
        '<a id="top" href="b.html#there">ok</a><a href="b.html#nowhere">bad</a>'
        '<a href="missing.html">bad</a><a href="https://example.com/x">external</a>'
        '<a href="#top">ok</a><img src="_static/x.svg">'
    )
    (tmp_path / "b.html").write_text('<h1 id="there">b</h1><a href="../../out.html">out</a>')
    problems = check_links.check(tmp_path)
    assert problems == [
        "a.html: b.html#nowhere (no anchor #nowhere)",
        "a.html: missing.html (no such file)",
        "a.html: _static/x.svg (no such file)",
        "b.html: ../../out.html (leaves the site)",
    ]
