"""Static files under wrk: peregrine_rt's DirServer against aiohttp's static route and nginx.

Run: ``.venv/bin/python bench/static.py [--duration 5] [--servers peregrine,aiohttp,nginx]``
(nginx: ``apt-get install -y nginx``; it is a benchmark peer only.)

Two files, written to a temporary directory: ``small.txt`` of 6,150 bytes (the
size the Zig Peregrine README benchmarks) and ``large.bin`` of 1 MiB.  Each
server serves that directory alone, pinned to CPU 0 with ``taskset``; ``wrk
-t1`` is pinned to CPU 1, on loopback, keep-alive, ``--connections`` clients:

* peregrine: ``peregrine-rt bench.servers.static_peregrine:Static``
  (``DirServer`` with its defaults; ``os.sendfile`` for the large file);
* peregrine-reads: the same with ``STATIC_SENDFILE=0`` (the large file in
  64 KiB ``pread`` pieces): what ``sendfile`` is worth;
* aiohttp: ``bench.servers.static_aiohttp`` (``add_static``, asyncio loop);
* nginx: one process (``master_process off``, ``worker_processes 1``),
  ``sendfile on``, ``access_log off``, ``open_file_cache`` left at its default (off).

Before measuring, each server must answer both files with 200 and the exact
bytes.  Each point gets ``--warmup`` seconds of discarded load, then
``--repeat`` runs of ``--duration`` seconds; the best is reported.  Body MB/s
is requests/s times the file size, in MiB; CPU µs/req is the server's CPU
time (``/proc/<pid>/stat``) over the run divided by the requests served, a
figure less sensitive than requests/s to other work on the machine.  The last
line is
``peregrine_vs_aiohttp small=<ratio> large=<ratio>``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from _procs import (
    HOST,
    SERVER_CPU,
    BenchError,
    Peer,
    RunningServer,
    busy_pct,
    cpu_times,
    script,
    spawn,
)

WRK_CPU = 1
SMALL_SIZE = 6150
LARGE_SIZE = 1 << 20
FILES = {"small": ("small.txt", SMALL_SIZE), "large": ("large.bin", LARGE_SIZE)}
NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port} backlog=1024;
        root {root};
    }}
}}
"""


def peers(root: Path, workdir: Path) -> dict[str, Peer]:
    def nginx_argv(port: int) -> list[str]:
        conf = workdir / f"nginx-{port}.conf"
        conf.write_text(NGINX_CONF.format(dir=workdir, host=HOST, port=port, root=root))
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-e", "stderr"]

    def peregrine(sendfile: bool) -> Peer:
        env_prefix = ["env", f"STATIC_ROOT={root}", f"STATIC_SENDFILE={int(sendfile)}"]
        return Peer(
            "peregrine" if sendfile else "peregrine-reads",
            "peregrine_rt" if sendfile else "peregrine_rt (no sendfile)",
            ("peregrine_rt",),
            lambda port: [
                *env_prefix,
                *script("peregrine-rt", "peregrine_rt"),
                "bench.servers.static_peregrine:Static",
                "--host",
                HOST,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
        )

    return {
        "peregrine": peregrine(True),
        "peregrine-reads": peregrine(False),
        "aiohttp": Peer(
            "aiohttp",
            "aiohttp (add_static)",
            ("aiohttp",),
            lambda port: [
                sys.executable,
                "-m",
                "bench.servers.static_aiohttp",
                "--root",
                str(root),
                "--host",
                HOST,
                "--port",
                str(port),
            ],
        ),
        "nginx": Peer("nginx", "nginx (1 process)", (), nginx_argv),
    }


def write_files(root: Path) -> dict[str, bytes]:
    contents = {}
    seed = b"peregrine static benchmark\n"
    for key, (name, size) in FILES.items():
        data = (seed * (size // len(seed) + 1))[:size]
        (root / name).write_bytes(data)
        contents[key] = data
    return contents


def check(server: RunningServer, contents: dict[str, bytes]) -> None:
    for key, (name, _) in FILES.items():
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            sock.sendall(f"GET /{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(1 << 20):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or body != contents[key]:
            raise BenchError(f"{server.peer.label} answered /{name} with {head[:200]!r}")


def run_wrk(server: RunningServer, path: str, conns: int, seconds: int) -> dict[str, float]:
    argv = ["taskset", "-c", str(WRK_CPU), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s"]
    argv.append(f"http://{HOST}:{server.port}/{path}")
    with tempfile.TemporaryFile() as out:
        before = cpu_times()
        cpu0 = server.cpu_seconds()
        t0 = time.monotonic()
        proc = spawn(argv, out)
        if proc.wait(seconds + 30) != 0:
            raise BenchError(f"wrk failed for {server.peer.label}")
        wall = time.monotonic() - t0
        server_cpu = 100 * (server.cpu_seconds() - cpu0) / wall
        after = cpu_times()
        out.seek(0)
        text = out.read().decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps is None:
        raise BenchError(f"cannot parse wrk output:\n{text}")
    errors = re.search(r"Socket errors: (.*)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        raise BenchError(f"{server.peer.label}: {non2xx.group(1)} non-2xx responses")
    return {
        "rps": float(rps.group(1)),
        "server_cpu": server_cpu,
        "busy_wrk": busy_pct(before, after, WRK_CPU),
        "busy_server": busy_pct(before, after, SERVER_CPU),
        "errors": 1.0 if errors else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--servers", default="peregrine,peregrine-reads,aiohttp,nginx")
    args = ap.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, wrk -t1 -c{args.connections} "
        f"-d{args.duration}s (best of {args.repeat}), server on CPU {SERVER_CPU}, wrk on CPU {WRK_CPU}"
    )
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="peregrine-static-") as tmp:
        workdir = Path(tmp)
        root = workdir / "root"
        root.mkdir()
        contents = write_files(root)
        table = peers(root, workdir)
        for key in args.servers.split(","):
            peer = table[key]
            if (
                key == "nginx"
                and shutil.which("nginx") is None
                and not Path("/usr/sbin/nginx").exists()
            ):
                print("# nginx: not installed (apt-get install -y nginx); skipped")
                continue
            server = RunningServer(peer, workdir)
            try:
                server.wait_ready()
                check(server, contents)
                results[key] = {}
                for case, (name, size) in FILES.items():
                    if args.warmup:
                        run_wrk(server, name, args.connections, args.warmup)
                    best = None
                    for _ in range(args.repeat):
                        time.sleep(0.3)
                        r = run_wrk(server, name, args.connections, args.duration)
                        if best is None or r["rps"] > best["rps"]:
                            best = r
                    assert best is not None
                    best["mbs"] = best["rps"] * size / (1 << 20)
                    best["cpu_us"] = best["server_cpu"] / 100 / best["rps"] * 1e6
                    results[key][case] = best
                    print(
                        f"  {peer.label:<28} {case:<5} {best['rps']:>9.0f} req/s {best['mbs']:>8.1f} MiB/s"
                        f"  server CPU {best['server_cpu']:>3.0f}% ({best['cpu_us']:.0f} us/req)"
                        f"  cpu{SERVER_CPU}/cpu{WRK_CPU} busy "
                        f"{best['busy_server']:>3.0f}%/{best['busy_wrk']:>3.0f}%",
                        flush=True,
                    )
            finally:
                note = server.stop()
                if note:
                    print(f"# note: {note}")
    print()
    print(
        "| server | small req/s | small MiB/s | small CPU µs/req | 1 MiB req/s | 1 MiB MiB/s"
        " | 1 MiB CPU µs/req | vs aiohttp small | vs aiohttp 1 MiB | vs nginx small | vs nginx 1 MiB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = results.get("aiohttp", {})
    ngx = results.get("nginx", {})
    for key, cases in results.items():
        s, lg = cases["small"], cases["large"]

        def ratio(ref: dict[str, dict[str, float]], case: str, rps: float) -> str:
            return f"{rps / ref[case]['rps']:.2f}x" if case in ref else "n/a"

        print(
            f"| {table[key].label} | {s['rps']:.0f} | {s['mbs']:.1f} | {s['cpu_us']:.0f} "
            f"| {lg['rps']:.0f} | {lg['mbs']:.1f} | {lg['cpu_us']:.0f} | "
            f"{ratio(base, 'small', s['rps'])} | {ratio(base, 'large', lg['rps'])} | "
            f"{ratio(ngx, 'small', s['rps'])} | {ratio(ngx, 'large', lg['rps'])} |"
        )
    if "peregrine" in results and base:
        p = results["peregrine"]
        print(
            f"peregrine_vs_aiohttp small={p['small']['rps'] / base['small']['rps']:.2f} "
            f"large={p['large']['rps'] / base['large']['rps']:.2f}"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/static.py: {exc}", file=sys.stderr)
        sys.exit(1)
