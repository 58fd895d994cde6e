"""The chat on Channels (``make run``): ``app.py`` the server, ``nicks.py`` who holds a nick."""
