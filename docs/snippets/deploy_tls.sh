peregrine-rt examples.echo:Echo --host 0.0.0.0 --port 443 --certfile cert.pem --keyfile key.pem
