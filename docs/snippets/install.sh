pip install .                  # from a checkout; runtime: trio, wsproto (and h11)
pip install '.[redis]'         # RedisHub: topics across processes and machines (coredis)
pip install '.[testing]'       # pytest and pytest-trio, for peregrine_rt.testing
