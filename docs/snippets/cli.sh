# Serve examples/echo.py on 127.0.0.1:8000 (the defaults)
peregrine-rt examples.echo:Echo

# Every interface, port 8080, one log line per request
peregrine-rt examples.counter:Counter --host 0.0.0.0 --port 8080 --access-log

# The same, as a module (no script on PATH needed)
python -m peregrine_rt examples.counter:Counter --port 8080

# TLS: HTTPS and wss://
peregrine-rt examples.echo:Echo --host 0.0.0.0 --port 8443 --certfile cert.pem --keyfile key.pem

# A Unix domain socket behind a proxy, more time to finish on shutdown
peregrine-rt examples.echo:Echo --uds /run/echo.sock --shutdown-grace 10 --log-level warning

# Settings from a TOML file, one changed for this run (the three ways: docs/configuration.rst)
peregrine-rt examples.echo:Echo --config peregrine.toml --max-connections 20000 --no-access-log
