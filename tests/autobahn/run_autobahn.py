"""Run the Autobahn|Testsuite fuzzing client against a peregrine_rt echo server.

Usage (from anywhere; the project's venv runs it)::

    .venv/bin/python tests/autobahn/run_autobahn.py                 # cases 1-10 (CI's set)
    .venv/bin/python tests/autobahn/run_autobahn.py --preset compression   # 12.*, 13.*
    .venv/bin/python tests/autobahn/run_autobahn.py --cases 5.* 7.1.*      # a subset

It starts the server on a free loopback port (``examples.echo:Echo`` through
``python -m peregrine_rt``, or ``tests/autobahn/echo_deflate.py`` for the
compression preset), runs ``wstest -m fuzzingclient`` once per case pattern
(so each group is timed, and a hung group does not cost the others' reports),
prints a summary with every FAILED case and what its report says, and stops
the server.

Exit status: 0 no case FAILED; 1 some case has ``behavior`` or
``behaviorClose`` FAILED; 2 the run itself went wrong (no wstest, the server
did not start or died, a timeout, a missing report).

The wstest environment is Python 2.7 and lives in ``.autobahn-venv`` (see
``setup_env.sh``; ``--setup`` runs it first).  Reports go to
``.autobahn-venv/reports/<preset>/<group>/`` (``index.html`` in each).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEMPLATE = HERE / "fuzzingclient.json"
SETUP_SCRIPT = HERE / "setup_env.sh"
DEFAULT_CACHE = REPO / ".autobahn-venv"

CORE_CASES = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*")
COMPRESSION_CASES = ("12.*", "13.*")
PRESETS = {
    # name: (cases, server kind)
    "core": (CORE_CASES, "echo"),
    "compression": (COMPRESSION_CASES, "deflate"),
}
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
DEFAULT_TIMEOUT = 15 * 60.0


def cache_dir() -> Path:
    return Path(os.environ.get("AUTOBAHN_VENV") or DEFAULT_CACHE)


def default_wstest() -> Path:
    return Path(os.environ.get("AUTOBAHN_WSTEST") or cache_dir() / "py27" / "bin" / "wstest")


# -- results ----------------------------------------------------------------------


@dataclasses.dataclass
class Group:
    """One wstest invocation: one case pattern."""

    pattern: str
    outdir: Path
    seconds: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    cases: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunResult:
    preset: str
    server: str
    reports: Path
    groups: list[Group] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def cases(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for group in self.groups:
            merged.update(group.cases)
        return dict(sorted(merged.items(), key=lambda kv: case_key(kv[0])))

    @property
    def failed(self) -> list[str]:
        """Case ids whose behavior or behaviorClose is FAILED."""
        return [
            case
            for case, entry in self.cases.items()
            if entry.get("behavior") == "FAILED" or entry.get("behaviorClose") == "FAILED"
        ]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(BEHAVIORS, 0)
        for entry in self.cases.values():
            behavior = str(entry.get("behavior"))
            counts[behavior] = counts.get(behavior, 0) + 1
        return counts

    def close_counts(self) -> dict[str, int]:
        """behaviorClose values: OK, FAILED, FAILED BY CLIENT, WRONG CODE, UNCLEAN, ..."""
        counts: dict[str, int] = {}
        for entry in self.cases.values():
            behavior = str(entry.get("behaviorClose"))
            counts[behavior] = counts.get(behavior, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def ok(self) -> bool:
        return not self.errors and not self.failed


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split(".") if part.isdigit())


# -- processes ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(kind: str, port: int) -> list[str]:
    if kind == "echo":
        return [
            sys.executable,
            "-m",
            "peregrine_rt",
            "examples.echo:Echo",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    if kind == "deflate":
        return [
            sys.executable,
            str(HERE / "echo_deflate.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    raise ValueError(f"unknown server kind {kind!r}")


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a process this module started (its own session: signal its group by id)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_server(
    kind: str, log_path: Path, start_timeout: float = 30.0
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            server_command(kind, port),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the {kind} server exited with {proc.returncode} before listening; "
                        f"its log: {log_path}"
                    )
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the {kind} server did not listen on port {port} within "
                            f"{start_timeout:g}s; its log: {log_path}"
                        ) from None
                    time.sleep(0.1)
            yield proc, port
        finally:
            _stop(proc, grace=10.0)


def run_wstest(wstest: Path, spec: dict[str, Any], group: Group, timeout: float) -> None:
    """Run one fuzzingclient invocation (stopped after ``timeout`` seconds); fill ``group``."""
    if group.outdir.exists():
        shutil.rmtree(group.outdir)
    group.outdir.mkdir(parents=True)
    spec_path = group.outdir / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    log_path = group.outdir / "wstest.log"
    start = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(wstest), "-m", "fuzzingclient", "-s", str(spec_path)],
            cwd=group.outdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            group.timed_out = True
        finally:
            _stop(proc, grace=5.0)
    group.seconds = time.monotonic() - start
    group.returncode = proc.returncode


def load_index(outdir: Path) -> dict[str, dict[str, Any]]:
    index = json.loads((outdir / "index.json").read_text())
    cases: dict[str, dict[str, Any]] = {}
    for agent_cases in index.values():
        cases.update(agent_cases)
    return cases


# -- the run --------------------------------------------------------------------------


def build_spec(agent: str, port: int, outdir: Path, cases: Sequence[str]) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(TEMPLATE.read_text())
    spec["outdir"] = str(outdir)
    spec["servers"][0]["agent"] = agent
    spec["servers"][0]["url"] = f"ws://127.0.0.1:{port}"
    spec["cases"] = list(cases)
    return spec


def run(
    cases: Sequence[str] = CORE_CASES,
    *,
    server: str = "echo",
    preset: str = "core",
    reports: Path | None = None,
    wstest: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    one_run: bool = False,
    progress: bool = False,
) -> RunResult:
    """Serve, fuzz each case pattern in turn (all in one wstest run with ``one_run``)."""
    wstest = wstest or default_wstest()
    reports = reports or cache_dir() / "reports" / preset
    result = RunResult(preset=preset, server=server, reports=reports)
    if not os.access(wstest, os.X_OK):
        result.errors.append(f"no wstest at {wstest} (run tests/autobahn/setup_env.sh)")
        return result
    agent = "peregrine_rt" if server == "echo" else f"peregrine_rt_{server}"
    patterns: list[list[str]] = [list(cases)] if one_run else [[c] for c in cases]
    start = time.monotonic()
    deadline = start + timeout
    try:
        with running_server(server, reports / "server.log") as (proc, port):
            for chunk in patterns:
                label = "all" if one_run else chunk[0].replace("*", "x")
                group = Group(pattern=" ".join(chunk), outdir=reports / label)
                result.groups.append(group)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    result.errors.append(
                        f"{group.pattern}: not run, the {timeout:g}s budget ran out"
                    )
                    continue
                if progress:
                    print(f"[autobahn] {group.pattern} ...", end="", flush=True)
                spec = build_spec(agent, port, group.outdir, chunk)
                run_wstest(wstest, spec, group, remaining)
                if group.timed_out:
                    result.errors.append(
                        f"{group.pattern}: wstest stopped after {group.seconds:.0f}s "
                        f"(the {timeout:g}s budget ran out); log {group.outdir / 'wstest.log'}"
                    )
                elif group.returncode != 0:
                    result.errors.append(
                        f"{group.pattern}: wstest exited with {group.returncode}; "
                        f"log {group.outdir / 'wstest.log'}"
                    )
                try:
                    group.cases = load_index(group.outdir)
                except (OSError, ValueError) as exc:
                    if not group.timed_out:
                        result.errors.append(f"{group.pattern}: no usable index.json ({exc})")
                else:
                    if not group.cases:
                        result.errors.append(f"{group.pattern}: the report has no case")
                if progress:
                    print(f" {len(group.cases)} cases, {group.seconds:.1f}s", flush=True)
                if proc.poll() is not None:
                    result.errors.append(
                        f"the server exited with {proc.returncode} during {group.pattern}; "
                        f"its log: {reports / 'server.log'}"
                    )
                    break
    except RuntimeError as exc:
        result.errors.append(str(exc))
    result.seconds = time.monotonic() - start
    return result


# -- reporting ----------------------------------------------------------------------------


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else value
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} chars)"
    return text


def failure_details(result: RunResult, case: str) -> dict[str, Any]:
    """What the case's own report file says (expected vs observed)."""
    entry = result.cases[case]
    details: dict[str, Any] = {"behavior": entry.get("behavior")}
    details["behaviorClose"] = entry.get("behaviorClose")
    report = None
    for group in result.groups:
        if case in group.cases:
            path = group.outdir / str(entry.get("reportfile"))
            with contextlib.suppress(OSError, ValueError):
                report = json.loads(path.read_text())
            details["reportfile"] = str(path)
    if report is None:
        return details
    for key in (
        "description",
        "expectation",
        "result",
        "resultClose",
        "expected",
        "received",
        "expectedClose",
        "localCloseCode",
        "localCloseReason",
        "remoteCloseCode",
        "remoteCloseReason",
        "wasClean",
        "wasNotCleanReason",
        "droppedByMe",
        "failedByMe",
        "wasCloseHandshakeTimeout",
        "wasServerConnectionDropTimeout",
    ):
        details[key] = report.get(key)
    return details


def format_result(result: RunResult, *, details: bool = True) -> str:
    lines = [
        f"Autobahn fuzzingclient, preset {result.preset}, server {result.server}: "
        f"{len(result.cases)} cases in {result.seconds:.1f}s; reports in {result.reports}",
    ]
    for group in result.groups:
        state = " (TIMED OUT)" if group.timed_out else ""
        lines.append(
            f"  {group.pattern:<8} {len(group.cases):>4} cases {group.seconds:>8.1f}s{state}"
        )
    counts = result.counts()
    lines.append("  " + "  ".join(f"{name}={count}" for name, count in counts.items()))
    lines.append(
        "  behaviorClose: "
        + ("  ".join(f"{name}={count}" for name, count in result.close_counts().items()) or "-")
    )
    failed = result.failed
    lines.append(f"  FAILED cases ({len(failed)}): {' '.join(failed) or '-'}")
    if details:
        for case in failed:
            info = failure_details(result, case)
            lines.append(
                f"  -- {case}: behavior {info['behavior']}, behaviorClose {info['behaviorClose']}"
            )
            for key, value in info.items():
                if key in ("behavior", "behaviorClose") or value is None:
                    continue
                lines.append(f"       {key}: {_short(value)}")
    for error in result.errors:
        lines.append(f"  ERROR: {error}")
    return "\n".join(lines)


def summary_json(result: RunResult) -> dict[str, Any]:
    return {
        "preset": result.preset,
        "server": result.server,
        "seconds": round(result.seconds, 1),
        "total": len(result.cases),
        "counts": result.counts(),
        "close_counts": result.close_counts(),
        "groups": [
            {
                "pattern": g.pattern,
                "cases": len(g.cases),
                "seconds": round(g.seconds, 1),
                "timed_out": g.timed_out,
            }
            for g in result.groups
        ],
        "failed": {case: failure_details(result, case) for case in result.failed},
        "errors": result.errors,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="core")
    p.add_argument("--cases", nargs="+", metavar="PATTERN", help="override the preset's cases")
    p.add_argument("--server", choices=["echo", "deflate"], help="override the preset's server")
    p.add_argument("--reports", type=Path, help="reports dir (default .autobahn-venv/reports/…)")
    p.add_argument("--wstest", type=Path, help="the wstest to run (default .autobahn-venv's)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds in all")
    p.add_argument("--one-run", action="store_true", help="one wstest run for all patterns")
    p.add_argument("--setup", action="store_true", help="run setup_env.sh first")
    p.add_argument("--quiet", action="store_true", help="no per-failure details")
    args = p.parse_args(argv)
    cases, server = PRESETS[args.preset]
    if args.setup:
        done = subprocess.run(["bash", str(SETUP_SCRIPT)], check=False)
        if done.returncode != 0:
            print(f"setup_env.sh failed ({done.returncode})", file=sys.stderr)
            return 2
    result = run(
        args.cases or cases,
        server=args.server or server,
        preset=args.preset,
        reports=args.reports,
        wstest=args.wstest,
        timeout=args.timeout,
        one_run=args.one_run,
        progress=True,
    )
    print(format_result(result, details=not args.quiet))
    result.reports.mkdir(parents=True, exist_ok=True)
    (result.reports / "summary.json").write_text(json.dumps(summary_json(result), indent=2) + "\n")
    if result.errors:
        return 2
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
