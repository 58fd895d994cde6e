"""The ASGI adapter's parts; the public face is :mod:`peregrine_rt.asgi`.

* ``_scope``: the scope dicts built from a :class:`~peregrine_rt.Request`;
* ``_http``: one HTTP request as an ASGI call (``receive``/``send`` over the
  connection's own body reads and response writes);
* ``_websocket``: one WebSocket scope (the app's task, its inbox, the hooks
  that feed it);
* ``_lifespan``: the lifespan scope, run for the server's life.
"""
