"""The soak test's figures (``bench/soak.py``): samples, the RSS slope, the table, an SVG plot.

Plain functions over :class:`Sample` lists, no I/O: the plot is a hand-written
SVG document (polylines on two panels: RSS and trio tasks per process, the
warm-up shaded, the faults marked), so no plotting library is needed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from html import escape

RATES = {
    "HTTP req/s": ("http",),
    "WS + SSE msg/s": ("echo", "fan", "sse"),
    "chat deliveries/s": ("chat_recv",),
    "chat acked/s": ("chat_acked",),
}


@dataclass(frozen=True, slots=True)
class ProcState:
    """One process at one moment: ``tasks`` is ``None`` for what is not a worker."""

    rss_kib: int
    fds: int
    tasks: int | None


@dataclass(frozen=True, slots=True)
class Sample:
    """Every process by label, and the running totals, ``t`` seconds into the load."""

    t: float
    procs: dict[str, ProcState]
    counts: dict[str, int]


def slope_kib_per_min(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, KiB) points, in KiB per minute (None under 3 points)."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60


def floors(points: list[tuple[float, float]], every: float) -> list[tuple[float, float]]:
    """The lowest point of each ``every``-second window: RSS without the transient buffers.

    A slow reader of ``GET /big`` holds a MiB while it is sent; the floor
    is what stays when those are gone, so its slope is the one a leak shows in.
    """
    low: dict[int, tuple[float, float]] = {}
    count: dict[int, int] = {}
    for t, v in points:
        key = int(t // every)
        count[key] = count.get(key, 0) + 1
        if key not in low or v < low[key][1]:
            low[key] = (t, v)
    full = max(count.values(), default=0)  # a window cut short (the last) has too few to judge
    return [low[k] for k in sorted(low) if 2 * count[k] >= full]


def rss_points(samples: list[Sample], label: str, after: float) -> list[tuple[float, float]]:
    return [(s.t, s.procs[label].rss_kib) for s in samples if s.t >= after and label in s.procs]


def labels_of(samples: list[Sample]) -> list[str]:
    """Every process label: the workers in order of first appearance, then the others."""
    seen: dict[str, None] = {}
    for s in samples:
        seen.update(dict.fromkeys(s.procs))
    others = ("supervisor", "redis")
    return [x for x in seen if x not in others] + [x for x in others if x in seen]


def markdown_rows(samples: list[Sample], every: float) -> list[str]:
    """A Markdown table: one row per ``every`` seconds (the first sample at or after each)."""
    labels = labels_of(samples)
    workers = [x for x in labels if not x.startswith(("supervisor", "redis"))]
    picked: list[Sample] = []
    for s in samples:
        if not picked or s.t >= picked[-1].t + every - 1e-6 or s is samples[-1]:
            picked.append(s)

    def cell(s: Sample, names: list[str], attr: str, scale: float = 1.0) -> str:
        out = []
        for name in names:
            state = s.procs.get(name)
            value = None if state is None else getattr(state, attr)
            out.append(
                "—" if value is None else f"{value / scale:.1f}" if scale != 1 else str(value)
            )
        return " / ".join(out)

    head = (
        f"| t (s) | RSS MiB ({' / '.join(labels)}) | fds ({' / '.join(workers)}) "
        f"| trio tasks ({' / '.join(workers)}) | {' | '.join(RATES)} | errors |"
    )
    rows = [head, "| " + " | ".join(["---:"] * (5 + len(RATES))) + " |"]
    for prev, s in itertools.pairwise(picked):
        dt = s.t - prev.t
        rates = [
            f"{sum(s.counts[k] - prev.counts[k] for k in keys) / dt:,.0f}"
            for keys in RATES.values()
        ]
        errors = s.counts["errors"] - prev.counts["errors"]
        rows.append(
            f"| {s.t:.0f} | {cell(s, labels, 'rss_kib', 1024)} | {cell(s, workers, 'fds')} "
            f"| {cell(s, workers, 'tasks')} | {' | '.join(rates)} | {errors} |"
        )
    return rows


# -- the plot -----------------------------------------------------------------------

COLOURS = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#718096", "#d53f8c")
WIDTH, LEFT, RIGHT = 720, 64, 150


def _panel(
    samples: list[Sample],
    labels: list[str],
    value: str,
    title: str,
    top: int,
    height: int,
    span: float,
) -> list[str]:
    series = {
        label: [
            (s.t, float(getattr(s.procs[label], value)) / (1024 if value == "rss_kib" else 1))
            for s in samples
            if label in s.procs and getattr(s.procs[label], value) is not None
        ]
        for label in labels
    }
    series = {k: v for k, v in series.items() if v}
    values = [v for pts in series.values() for _, v in pts] or [0.0]
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.1, 1.0)
    lo, hi = max(0.0, lo - pad), hi + pad
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + plot_w * t / span

    def y(v: float) -> float:
        return top + height - height * (v - lo) / (hi - lo)

    out = [
        f'<text x="{LEFT}" y="{top - 8}" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{height}" fill="none" stroke="#a0aec0"/>',
    ]
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>'
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#edf2f7"/>'
        )
    for n, (label, pts) in enumerate(series.items()):
        colour = COLOURS[labels.index(label) % len(COLOURS)]
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        ly = top + 14 + 16 * n
        out.append(
            f'<line x1="{WIDTH - RIGHT + 10}" x2="{WIDTH - RIGHT + 28}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"/>'
            f'<text x="{WIDTH - RIGHT + 34}" y="{ly}">{escape(label)}</text>'
        )
    return out


def svg(
    samples: list[Sample], events: list[tuple[float, str]], span: float, warmup: float, title: str
) -> str:
    """RSS (MiB) and trio tasks per process over time, as a standalone SVG document."""
    labels = [x for x in labels_of(samples) if not x.startswith("redis")]
    workers = [x for x in labels if not x.startswith("supervisor")]
    rss_top, rss_h, task_top, task_h = 48, 190, 290, 110
    height = task_top + task_h + 40
    plot_w = WIDTH - LEFT - RIGHT
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for top, h in ((rss_top, rss_h), (task_top, task_h)):
        out.append(
            f'<rect x="{LEFT}" y="{top}" width="{plot_w * warmup / span:.1f}" height="{h}" '
            'fill="#f7fafc"/>'
        )
    out += _panel(samples, labels, "rss_kib", "RSS per process, MiB", rss_top, rss_h, span)
    out += _panel(samples, workers, "tasks", "trio tasks per worker", task_top, task_h, span)
    for n, (t, text) in enumerate(events):
        ex = LEFT + plot_w * t / span
        out.append(
            f'<line x1="{ex:.1f}" x2="{ex:.1f}" y1="{rss_top}" y2="{task_top + task_h}" '
            'stroke="#e53e3e" stroke-dasharray="3,3"/>'
            f'<text x="{ex + 3:.1f}" y="{rss_top + rss_h - 6 - 12 * (n % 3)}" fill="#c53030">'
            f"{escape(text)}</text>"
        )
    unit, scale = ("min", 60.0) if span >= 180 else ("s", 1.0)
    step = max(1, round(span / scale / 10))
    tick = 0
    while tick * scale <= span + 1e-6:
        tx = LEFT + plot_w * tick * scale / span
        out.append(
            f'<text x="{tx:.1f}" y="{task_top + task_h + 16}" text-anchor="middle">{tick}</text>'
        )
        tick += step
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{task_top + task_h + 32}" text-anchor="middle">'
        f"time under load ({unit}); shaded: warm-up</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
