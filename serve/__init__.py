"""`smallgpt serve`: an OpenAI-compatible HTTP API over a run (FastAPI + uvicorn).

api.py holds the protocol (routes, validation, errors, server-sent events); chat.py turns chat messages into a
prompt; server.py is the serving process (lock, address record, uvicorn, detached launch). The math is the
engine's: engine.batching runs every request's generation, sharing decode steps.
"""
