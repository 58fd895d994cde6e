peregrine-rt examples.echo:Echo --port 8080
curl -d hello localhost:8080/x       # method=POST target=/x body_len=5
