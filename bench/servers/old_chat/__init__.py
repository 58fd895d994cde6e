"""The OLD chat, frozen: a benchmark peer, not maintained code.

A verbatim copy of ``examples/chat`` (``app.py``, ``store.py``, ``nicks.py``,
``resilience.py``) as it was on commit 9afa2d8, before the chat was rebuilt on
the Channels layer (issue #14 item 8).  ``bench/channels.py`` (server
``chat``, through ``bench/servers/channels_chat.py``) and ``bench/chat.py``
measure it as "the old chat path": its own JSON protocol (``hello``, ``say``,
``message``...) on the mixins and the hub, with in-memory or Redis history.

Do not fix, restyle or extend it: a benchmark peer is only worth something if
it stays the code that was measured.  The only changes from 9afa2d8 are this
docstring, the one at the top of ``app.py``, the static root (an
``index.html`` placeholder here: the old browser client is not copied, the
benchmarks never fetch it), and one ``noqa`` comment in ``store.py`` that
ruff's per-file rules for ``bench/`` made redundant.  The imports between its modules were relative
already, so they work unchanged inside ``bench.servers.old_chat``.

Serve it: ``peregrine-rt bench.servers.old_chat.app:Chat`` (from the
repository root, so that ``bench`` is importable), with ``--redis URL`` for
several nodes.
"""
