# A module's ASGI app (here docs/snippets/asgi_app.py's) on port 8000, two worker processes
peregrine-rt --asgi docs.snippets.asgi_app:app --port 8000 --workers 2
