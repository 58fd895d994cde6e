"""The hello-world servers ``bench/http.py`` runs under load, one per peer.

Every one answers any request with ``200``, ``text/plain; charset=utf-8`` and the
13 bytes ``Hello, World!``, keeping the connection alive.
"""
