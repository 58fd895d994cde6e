# The status page at /status, with a token of your choosing (without one: a random token, logged at start)
peregrine-rt examples.echo:Echo --port 8000 --status-page --status-token "$STATUS_TOKEN"

# Under /_ops, on a port of its own that only operators can reach
peregrine-rt examples.echo:Echo --port 8000 --status-page --ops-prefix /_ops --metrics-port 9100

# Without the token: 403
curl -i http://127.0.0.1:8000/status
