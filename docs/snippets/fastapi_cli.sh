# The FastAPI app alone, served by peregrine_rt (no realtime handler next to it)
peregrine-rt --asgi docs.snippets.fastapi_hub:api --port 8000
# The Router of examples/fastapi_chat.py: the chat at /, FastAPI at /api, one port
peregrine-rt examples.fastapi_chat:App --port 8000
# Two worker processes: the hub, the chat's history and its nicks go through Redis
peregrine-rt examples.fastapi_chat:App --port 8000 --workers 2 --redis redis://127.0.0.1:6379/0
# An announcement to every room (the token is the server's CHAT_ANNOUNCE_TOKEN)
curl -X POST http://127.0.0.1:8000/api/announce -H "Authorization: Bearer $TOKEN" \
     -H "Content-Type: application/json" -d '{"text": "maintenance at 6"}'
