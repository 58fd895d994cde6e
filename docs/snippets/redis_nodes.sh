# Two nodes of examples/echo.py sharing a redis-server on 127.0.0.1:6379:
# what a /bcast socket on one sends, every /bcast socket on both receives
peregrine-rt examples.echo:Echo --port 8081 --redis redis://127.0.0.1:6379
peregrine-rt examples.echo:Echo --port 8082 --redis redis://127.0.0.1:6379

# Several worker processes on one port, one hub link each
peregrine-rt examples.echo:Echo --port 8080 --workers 4 --redis redis://127.0.0.1:6379
