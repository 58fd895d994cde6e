# Four worker processes on port 8000; topics cross them through Redis
peregrine-rt examples.echo:Echo --host 0.0.0.0 --port 8000 --workers 4 --redis redis://127.0.0.1:6379/0

# Two workers, the in-memory hub: each process has its own topics (a warning says so)
peregrine-rt examples.echo:Echo --port 8000 --workers 2
