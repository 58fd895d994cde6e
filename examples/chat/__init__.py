"""The chat example: ``peregrine-rt examples.chat.app:Chat`` (``make run``).

* ``app.py``: the server, a handler built from the mixins (the protocol is in
  its docstring);
* ``store.py``: history, message ids, rooms and presence, in memory or in Redis;
* ``nicks.py``: who holds which nick (a person: a signed session's id);
* ``static/``: the browser client, plain HTML, CSS and JavaScript modules;
* ``steps.py``: the first steps of the tutorial (``docs/tutorial.rst``).
"""
