"""File descriptors: every connection is one, and the soft limit is often 1,024.

A server meant for 10,000 sockets that runs under the usual soft
``RLIMIT_NOFILE`` of 1,024 fails at the 1,020th connection with ``EMFILE``,
whatever ``Config.max_connections`` says.  At start the server raises its soft
limit as far as the hard limit allows (any process may, without privileges,
as nginx's ``worker_rlimit_nofile`` and Go's runtime do) and warns when
``max_connections`` still does not fit.
"""

from __future__ import annotations

import logging

__all__ = ["RESERVED_FDS", "raise_fd_limit"]

log = logging.getLogger("peregrine_rt.server")

RESERVED_FDS = 64  # descriptors kept for listeners, files, pipes, Redis, logs


def raise_fd_limit(max_connections: int) -> int | None:
    """Raise the soft ``RLIMIT_NOFILE`` toward the hard limit; return the soft limit now.

    Logs a warning when ``max_connections`` plus :data:`RESERVED_FDS` exceed
    it.  Returns None where there are no such limits (not a POSIX system).
    """
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_FDS
    # Up to the hard limit, as Go's runtime does (trio polls with epoll: no
    # FD_SETSIZE to fear); with no hard limit, to what is wanted.
    target = max(soft, wanted) if hard == resource.RLIM_INFINITY else max(soft, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. above fs.nr_open
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        else:
            log.debug("raised the open-file limit from %d to %d", soft, target)
            soft = target
    if soft != resource.RLIM_INFINITY and wanted > soft:
        log.warning(
            "max_connections=%d, but this process may open only %d files (hard limit %s): "
            "connections past about %d will be refused until some close; raise the hard "
            "limit (ulimit -Hn, systemd LimitNOFILE=) or lower max_connections",
            max_connections,
            soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            max(soft - RESERVED_FDS, 0),
        )
    return int(soft)
