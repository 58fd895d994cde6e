make bench-parser               # the HTTP parser against h11 and httptools
make bench-http                 # HTTP hello world against the peers (wrk, pinned CPUs)
python bench/ws.py              # WebSocket echo and idle memory against the peers
python bench/ws_deflate_memory.py 1000   # memory cost of permessage-deflate
python bench/metrics.py         # the cost of --metrics: HTTP and echo with metrics on and off
python bench/asgi.py            # a Starlette app under peregrine_rt, uvicorn and hypercorn-trio
python bench/instructions.py    # instructions per request under valgrind: steady where req/s is not
python bench/ws_opcodes.py      # bytecode instructions per WebSocket echo, by function
