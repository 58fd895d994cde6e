"""Passing configuration (docs/configuration.rst): a Config, or keyword arguments."""

from __future__ import annotations

import peregrine_rt as pr
from examples.counter import Counter as MyHandler


def serve_configured() -> None:
    # [usage]
    pr.run(MyHandler, pr.Config(port=3000, access_log=True))
    # or, the same:
    pr.run(MyHandler, port=3000, access_log=True)
    # [/usage]


def test_both_forms_give_the_same_config() -> None:
    explicit = pr.Server(MyHandler, pr.Config(port=3000, access_log=True)).config
    keywords = pr.Server(MyHandler, port=3000, access_log=True).config
    assert explicit == keywords
    assert (keywords.port, keywords.access_log, keywords.host) == (3000, True, "127.0.0.1")


def test_run_takes_both_forms(monkeypatch) -> None:
    # run() as far as it goes without serving: no logging set-up, no trio.run
    seen = []
    monkeypatch.setattr(pr._run, "install_default_logging", lambda level, log_format="text": None)
    monkeypatch.setattr(pr._run.trio, "run", lambda fn, server: seen.append(server.config))
    serve_configured()
    assert len(seen) == 2 and seen[0] == seen[1]
