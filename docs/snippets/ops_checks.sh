# Every operations endpoint on the app's port, under /_ops, with JSON logs
peregrine-rt examples.chat.app:Chat --metrics --health --ops-prefix /_ops --log-format json --access-log

# The endpoints on a port of their own (the app's routes are untouched)
peregrine-rt examples.chat.app:Chat --workers 4 --redis-url redis://127.0.0.1:6379 --metrics --health --metrics-port 9100

curl -s http://127.0.0.1:9100/metrics
curl -si http://127.0.0.1:9100/readyz
