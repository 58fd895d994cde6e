"""Check every link inside the built HTML site: files exist, #anchors exist.

Usage: python docs/_tools/check_links.py docs/_build/html

Sphinx's ``linkcheck`` builder would fetch external URLs, and there is no
network in CI; Sphinx's own ``-n -W`` build already fails on an unresolved
cross-reference.  This catches what is left: raw relative links written in
reST (```text <page.html#x>`_``), ``:download:``/image paths, and anchors
inside pages.  External links (with a scheme, or ``//host``) are skipped.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)
            elif (
                (name == "href" and tag in ("a", "link"))
                or (name == "src" and tag in ("img", "script", "iframe", "embed"))
                or (name == "data" and tag == "object")
            ):
                self.links.append(value)


def _parse(path: Path, cache: dict[Path, _Page]) -> _Page:
    if path not in cache:
        page = _Page()
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
        cache[path] = page
    return cache[path]


def check(site: Path) -> list[str]:
    """Every broken internal link of the site, as ``page: link (why)`` lines."""
    cache: dict[Path, _Page] = {}
    problems: list[str] = []
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [f"{site}: no HTML pages (build the site first)"]
    for page_path in pages:
        page = _parse(page_path, cache)
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                continue  # external: not reachable from here
            where = f"{page_path.relative_to(site)}: {link}"
            target = page_path if not parts.path else (page_path.parent / unquote(parts.path))
            target = target.resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(site.resolve()):
                problems.append(f"{where} (leaves the site)")
                continue
            if not target.is_file():
                problems.append(f"{where} (no such file)")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html" and fragment not in _parse(target, cache).ids:
                problems.append(f"{where} (no anchor #{fragment})")
    return problems


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    site = Path(sys.argv[1])
    problems = check(site)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(f"{len(problems)} broken link(s) in {site}")
    count = len(list(site.rglob("*.html")))
    print(f"links: {count} pages, every internal link and anchor resolves")


if __name__ == "__main__":
    main()
