"""The OpenAI-compatible HTTP API: routes, request validation, error objects and server-sent events.

Every request's generation runs in the engine's Batcher (its own thread); tokens come back to the event
loop through an asyncio queue. A request whose client goes away is cancelled, which frees its batch row
before the next decode step. Errors are OpenAI error objects ({"error": {"message", "type", "param",
"code"}}) with the matching status; anything unexpected is a 500 whose body names the log, never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.batching import Batcher, QueueFull
from engine.batching import Request as Generation
from engine.errors import ConfigError
from engine.sampler import SamplingConfig

from .chat import chat_prompt

log = logging.getLogger("smallgpt.serve")

MAX_BODY_BYTES = 1 << 20  # a prompt of a megabyte is far past any small model's context already
MAX_TOKENS = 4096  # per request: bounds how long one request can hold a batch row
MAX_STOP = 4  # as OpenAI's API
ROLES = ("system", "developer", "user", "assistant")


class APIError(Exception):
    """An error answered as an OpenAI error object with this HTTP status."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind
        self.headers = headers


def _error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class Served:
    """What the routes serve: one model behind its batcher."""

    batcher: Batcher
    model_id: str
    template: dict[str, str] | None  # an instruct run's prompt template (serve.chat), else None
    api_key: str | None
    created: int


def create_app(served: Served) -> FastAPI:
    app = FastAPI(title="smallgpt", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError) -> JSONResponse:
        return _error(e.status, e.message, e.kind, e.code, e.param, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = (f"No route {request.method} {request.url.path}: this server has GET /v1/models, "
                   f"POST /v1/completions, POST /v1/chat/completions and GET /healthz." if e.status_code in (404, 405)
                   else str(e.detail))
        return _error(e.status_code, message, "invalid_request_error", headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=e)
        return _error(500, "Internal error: the server's log (logs/smallgpt.log) has the details.", "server_error")

    authorized = [Depends(_authorize(served.api_key))]

    @app.get("/healthz", dependencies=authorized)
    async def healthz() -> dict[str, Any]:
        b = served.batcher
        return {"status": "ok", "model": served.model_id, "live": len(b.live), "waiting": len(b.waiting),
                "steps": b.steps}

    v1 = APIRouter(prefix="/v1", dependencies=authorized)

    @v1.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(served)]}

    @v1.get("/models/{model}")
    async def model(model: str) -> dict[str, Any]:
        _check_model(served, model)
        return _model_card(served)

    @v1.post("/completions")
    async def completions(request: Request) -> Any:
        data = await _read_json(request)
        _check_model(served, data.get("model"))
        prompt = data.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]  # the openai client may send a one-element list
        if not isinstance(prompt, str):
            raise APIError(400, "prompt must be a string (a list of strings or token ids is not supported).",
                           param="prompt")
        return await _respond(served, request, data, prompt, [], chat=False)

    @v1.post("/chat/completions")
    async def chat_completions(request: Request) -> Any:
        data = await _read_json(request)
        _check_model(served, data.get("model"))
        prompt, stops = chat_prompt(_messages(data.get("messages")), served.template)
        return await _respond(served, request, data, prompt, stops, chat=True)

    app.include_router(v1)
    return app


# --- request checks ---------------------------------------------------------------------------------

def _authorize(api_key: str | None) -> Callable[[Request], None]:
    expected = api_key.encode() if api_key else None

    def authorize(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest takes as long whatever the key's first differing byte: no timing oracle.
        if not (scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)):
            raise APIError(401, "Missing or wrong API key: send it as the header 'Authorization: Bearer KEY'.",
                           code="invalid_api_key", kind="authentication_error")
    return authorize


async def _read_json(request: Request) -> dict[str, Any]:
    too_big = APIError(413, f"The request body is over {MAX_BODY_BYTES // 1024} KB: send a shorter prompt.",
                       code="request_too_large")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise too_big
    body = bytearray()
    async for chunk in request.stream():  # also bounds a chunked body that declares no length
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_big
    try:
        data = json.loads(body)
    except ValueError:
        raise APIError(400, "The request body is not valid JSON: send a JSON object.") from None
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.")
    return data


def _check_model(served: Served, model: Any) -> None:
    if not isinstance(model, str):
        raise APIError(400, "model is required: a model id from GET /v1/models.", param="model")
    if model != served.model_id:
        raise APIError(404, f"The model '{model}' does not exist: this server serves '{served.model_id}'.",
                       code="model_not_found", param="model")


def _model_card(served: Served) -> dict[str, Any]:
    return {"id": served.model_id, "object": "model", "created": served.created, "owned_by": "smallgpt"}


def _messages(messages: Any) -> list[dict[str, str]]:
    """Chat messages as (role, text) dicts; content given as text parts is joined."""
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content} objects.", param="messages")
    out = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise APIError(400, f"messages[{i}].content: only text parts are supported.", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(content, str):
            raise APIError(400, f"messages[{i}] must have a role ({', '.join(ROLES)}) and text content.",
                           param="messages")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    return out


def _number(data: dict[str, Any], name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    v = data.get(name)
    if v is None:
        return default
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (low < v if low_open else low <= v) and v <= high
    if not ok:
        raise APIError(400, f"{name} must be a number from {low} to {high} (got {v!r}).", param=name)
    return float(v)


def _sampling(data: dict[str, Any], extra_stops: list[str], chat: bool) -> SamplingConfig:
    name = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = data.get(name)
    if max_tokens is None:
        max_tokens = 256 if chat else 16  # OpenAI's completions default is 16
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 0 <= max_tokens <= MAX_TOKENS:
        raise APIError(400, f"{name} must be a whole number from 0 to {MAX_TOKENS} (got {max_tokens!r}).", param=name)
    stop = data.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise APIError(400, f"stop must be a non-empty string or a list of up to {MAX_STOP} of them.", param="stop")
    seed = data.get("seed")
    if seed is None:
        seed = secrets.randbits(63)  # unseeded requests differ, as OpenAI's do
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise APIError(400, f"seed must be a whole number (got {seed!r}).", param="seed")
    if data.get("n") not in (None, 1):
        raise APIError(400, "n must be 1: send one request per completion.", param="n")
    top_p = _number(data, "top_p", 1.0, 0.0, 1.0, low_open=True)
    try:
        return SamplingConfig(max_new_tokens=max_tokens, temperature=_number(data, "temperature", 1.0, 0.0, 2.0),
                              top_p=None if top_p == 1.0 else top_p, stop=stop + extra_stops, seed=seed)
    except ConfigError as e:
        raise APIError(400, str(e)) from None


# --- generation and responses -----------------------------------------------------------------------

async def _respond(served: Served, request: Request, data: dict[str, Any], prompt: str, extra_stops: list[str],
                   chat: bool) -> Any:
    cfg = _sampling(data, extra_stops, chat)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "stream must be true or false.", param="stream")
    options = data.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[list[Any], str]] = asyncio.Queue()
    gen = Generation(prompt, cfg, lambda tokens, finish: loop.call_soon_threadsafe(queue.put_nowait, (tokens, finish)))
    try:
        await asyncio.to_thread(served.batcher.submit, gen)  # it tokenizes the prompt: off the event loop
    except QueueFull as e:
        raise APIError(429, str(e), code="queue_full", kind="rate_limit_error", headers={"Retry-After": "1"}) from None
    watcher = asyncio.create_task(_cancel_on_disconnect(request, gen))

    def done() -> None:
        watcher.cancel()
        gen.cancel()  # a no-op once the generation finished; else frees its row before the next step

    reply = _Reply(served, gen, chat)
    headers = {"X-Prompt-Tokens-Dropped": str(gen.prompt_dropped)} if gen.prompt_dropped else None
    if stream:
        return _EventStream(_events(queue, reply, include_usage), on_close=done, media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", **(headers or {})})
    try:
        pieces, count, finish = [], 0, ""
        while not finish:
            tokens, finish = await queue.get()
            pieces += [t.text for t in tokens]
            count += len(tokens)
    finally:
        done()
    _raise_unfinished(finish)
    return JSONResponse(reply.whole("".join(pieces), finish, count), headers=headers)


async def _cancel_on_disconnect(request: Request, gen: Generation) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)
    gen.cancel()


def _raise_unfinished(finish: str) -> None:
    if finish == "cancelled":  # only the server cancels a request whose client is still there
        raise APIError(503, "The server is shutting down: retry once it is back.", kind="server_error")
    if finish == "error":
        raise APIError(500, "Internal error: the server's log (logs/smallgpt.log) has the details.", kind="server_error")


class _Reply:
    """The response objects of one request, in the completions or the chat format."""

    def __init__(self, served: Served, gen: Generation, chat: bool):
        self.chat, self.gen = chat, gen
        self.head = {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
                     "object": "chat.completion" if chat else "text_completion",
                     "created": int(time.time()), "model": served.model_id}
        if gen.prompt_dropped:
            self.head["warning"] = (f"The prompt was cut from the left to fit the model's context: its first "
                                    f"{gen.prompt_dropped} of {gen.seq.prompt_tokens} tokens were dropped.")

    def usage(self, completion_tokens: int) -> dict[str, int]:
        prompt = self.gen.seq.prompt_tokens - self.gen.prompt_dropped
        return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens}

    def whole(self, text: str, finish: str, count: int) -> dict[str, Any]:
        choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text}} if self.chat
                                  else {"index": 0, "text": text})
        choice.update(logprobs=None, finish_reason=finish)
        return {**self.head, "choices": [choice], "usage": self.usage(count)}

    def chunk(self, text: str | None, finish: str | None) -> dict[str, Any]:
        """A stream chunk; for chat, text None is the first chunk (the role) and a finish chunk has no text."""
        if self.chat:
            delta = ({"role": "assistant", "content": ""} if text is None else {"content": text} if text else {})
            choice: dict[str, Any] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": text or ""}
        choice.update(logprobs=None, finish_reason=finish)
        return {**self.head, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "choices": [choice]}


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _events(queue: asyncio.Queue, reply: _Reply, include_usage: bool) -> AsyncIterator[str]:
    if reply.chat:
        yield _sse(reply.chunk(None, None))
    count, finish = 0, ""
    while not finish:
        tokens, finish = await queue.get()
        count += len(tokens)
        text = "".join(t.text for t in tokens)
        if text:
            yield _sse(reply.chunk(text, None))
    if finish in ("cancelled", "error"):
        try:
            _raise_unfinished(finish)
        except APIError as e:  # the status line is sent already: the error goes in the stream
            yield _sse({"error": {"message": e.message, "type": e.kind, "param": None, "code": None}})
    else:
        yield _sse(reply.chunk("", finish))
        if include_usage:
            yield _sse({**reply.head, "object": "chat.completion.chunk" if reply.chat else "text_completion",
                        "choices": [], "usage": reply.usage(count)})
    yield "data: [DONE]\n\n"


class _EventStream(StreamingResponse):
    """A StreamingResponse that calls on_close however it ends: finished, client gone, or server stopping."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
