"""`sftmix serve`: an OpenAI-compatible chat server (`/v1/chat/completions`, `/v1/models`) over sftmix's own
generation, so any stage of a study can be chatted with, used as a judge, or evaluated by outside tools.

Bounded by design: request bodies, max_tokens, n, prompt length and requests in flight all have caps, and every
refusal is a 4xx JSON body in OpenAI's error shape. Concurrent greedy requests with the same settings are batched
into one generate call; sampled requests run alone, so a seeded request gives the same text whatever else is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from .errors import SftmixError


@dataclass(frozen=True)
class Limits:
    max_tokens: int = 1024  # per completion
    max_n: int = 8
    max_body_bytes: int = 1 << 20
    max_pending: int = 16  # requests accepted and not answered yet; more get 429
    max_batch: int = 16  # requests batched into one generate call
    max_stops: int = 4


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---------------------------------------------------------------------------------------------------- loading


def load_served(model: str | None, adapter: str | None = None, stage: str | None = None, chat_template: str = "auto",
                device: str | None = None):
    """(model, tokenizer, served name) for a base model, a LoRA adapter on it, or a trained stage directory."""
    from .models import load_model, load_tokenizer

    if adapter and stage:
        raise SftmixError("give --adapter or --stage, not both")
    weights = None
    name = model
    if stage:
        d = Path(stage)
        f = d / "stage.json"
        if not f.exists():
            raise SftmixError(f"--stage {d}: no stage.json there; expected a finished stage directory "
                              "(OUT/stages/STAGE_ID with stage.json and model/ or adapter/)")
        info = json.loads(f.read_text())
        model = model or info.get("model")
        if not model:
            raise SftmixError(f"--stage {d}: stage.json does not name its base model; give it: sftmix serve MODEL --stage {d}")
        if (d / "model").is_dir():
            weights = d / "model"
        elif (d / "adapter").is_dir():
            adapter = str(d / "adapter")
        else:
            raise SftmixError(f"--stage {d}: neither model/ (full weights) nor adapter/ (LoRA) is there")
        name = f"{Path(model).name}-{d.name}"
    elif adapter:
        if not Path(adapter, "adapter_config.json").exists():
            raise SftmixError(f"--adapter {adapter}: no adapter_config.json there; expected a LoRA adapter directory")
        name = f"{Path(model).name}-{Path(adapter).name}"
    if not model:
        raise SftmixError("give a MODEL (tiny, smollm2-135m-instruct, an HF id or a directory)")
    tok = load_tokenizer(model, chat_template)
    m = load_model(model, device=device, adapter=adapter, weights=weights)
    m.eval()
    return m, tok, name


# ------------------------------------------------------------------------------------------------- generation


def generate_texts(model, tok, conversations: list[list[dict]], settings) -> list[list[str]]:
    """n completions per conversation through sftmix's generate (whichever contract this build has)."""
    import inspect

    from .evaluate.generate import generate

    if "settings" in inspect.signature(generate).parameters:
        return generate(model, tok, conversations, settings, batch_size=max(1, len(conversations)), progress=False,
                        desc="serve")
    if settings.do_sample:  # an older greedy-only generate
        raise ApiError(400, "this sftmix build serves greedy decoding only: send temperature 0", param="temperature")
    outs = generate(model, tok, conversations, settings.max_new_tokens, batch_size=max(1, len(conversations)),
                    progress=False)
    return [[_cut(o, settings.stop)] * settings.n for o in outs]


def _cut(text: str, stops) -> str:
    cuts = [text.find(s) for s in stops if s and s in text]
    return text[: min(cuts)] if cuts else text


class Batcher:
    """One worker thread owns the model; requests queue up and compatible ones share a generate call."""

    def __init__(self, fn, max_batch: int):
        self.fn, self.max_batch = fn, max_batch
        self.q: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="sftmix-serve-generate", daemon=True)
        self.thread.start()

    def submit(self, messages: list[dict], settings) -> Future:
        fut: Future = Future()
        self.q.put((messages, settings, fut))
        return fut

    def _loop(self) -> None:
        while True:
            first = self.q.get()
            if first is None:
                return
            batch = [first]
            if not first[1].do_sample:
                while len(batch) < self.max_batch:
                    try:
                        nxt = self.q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self.q.put(None)
                        break
                    batch.append(nxt)
            groups: dict = {}
            for item in batch:
                key = item[1] if not item[1].do_sample else id(item)
                groups.setdefault(key, []).append(item)
            for items in groups.values():
                self._run(items)

    def _run(self, items) -> None:
        try:
            outs = self.fn([m for m, _, _ in items], items[0][1])
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request, the worker keeps serving
            for _, _, fut in items:
                fut.set_exception(e)
            return
        for (_, _, fut), out in zip(items, outs):
            fut.set_result(out)

    def close(self) -> None:
        self.q.put(None)


# -------------------------------------------------------------------------------------------------------- app


def _request_model():
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class Part(BaseModel):
        type: Literal["text"]
        text: str

    class Message(BaseModel):
        role: Literal["system", "user", "assistant"]
        content: str | list[Part]

    class ChatRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        model: str | None = None
        messages: list[Message] = Field(min_length=1)
        max_tokens: int | None = Field(None, ge=1)
        max_completion_tokens: int | None = Field(None, ge=1)
        n: int = Field(1, ge=1)
        temperature: float = Field(1.0, ge=0, le=2)
        top_p: float = Field(1.0, gt=0, le=1)
        stop: str | list[str] | None = None
        seed: int | None = None
        stream: bool = False

    return ChatRequest


def create_app(model, tok, name: str, limits: Limits = Limits(), api_key: str | None = None, generate_fn=None):
    """The FastAPI app. `generate_fn(conversations, settings) -> list[list[str]]` defaults to sftmix's generate."""
    from .evaluate.settings import GenSettings

    ChatRequest = _request_model()
    ctx = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
    gen = generate_fn or (lambda convs, s: generate_texts(model, tok, convs, s))
    app = FastAPI(title="sftmix serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stats = {"requests": 0, "completions": 0, "rejected": 0}
    app.state.pending = 0
    app.state.batcher = Batcher(gen, limits.max_batch)

    def error(e: ApiError) -> JSONResponse:
        if e.status >= 400:
            app.state.stats["rejected"] += 1
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
        return error(ApiError(exc.status_code, str(exc.detail), kind))

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        return JSONResponse(ApiError(500, "internal server error", "server_error").body(), status_code=500)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer ...)", "authentication_error",
                           code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "pending": app.state.pending}

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            check_key(request)
        except ApiError as e:
            return error(e)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": int(time.time()),
                                            "owned_by": "sftmix"}]}

    async def read_body(request: Request) -> bytes:
        body, seen = bytearray(), 0
        # Counted as it arrives, so an undeclared huge body is refused too. An oversized body is read on (and
        # dropped) up to a hard limit, so the client gets its 413 instead of a connection reset mid-upload.
        async for chunk in request.stream():
            seen += len(chunk)
            if seen <= limits.max_body_bytes:
                body += chunk
            else:
                body = bytearray()
                if seen > max(64 << 20, 4 * limits.max_body_bytes):
                    break
        if seen > limits.max_body_bytes:
            raise ApiError(413, f"request body of {seen}{'+' if seen > max(64 << 20, 4 * limits.max_body_bytes) else ''} "
                           f"bytes is over the limit of {limits.max_body_bytes}", code="request_too_large")
        return bytes(body)

    def parse(body: bytes):
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"request body is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ApiError(400, "request body must be a JSON object")
        try:
            req = ChatRequest.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            param = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            what = "required field is missing" if err["type"] == "missing" else err["msg"]
            raise ApiError(400, f"{param}: {what}", param=param) from None
        if req.stream:
            raise ApiError(400, "streaming is not supported by sftmix serve; send stream: false", param="stream")
        if req.model not in (None, "", name):
            raise ApiError(404, f"model {req.model!r} is not served here; this server serves {name!r}",
                           "not_found_error", param="model", code="model_not_found")
        if req.n > limits.max_n:
            raise ApiError(400, f"n: at most {limits.max_n} completions per request (got {req.n})", param="n")
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > limits.max_stops:
            raise ApiError(400, f"stop: at most {limits.max_stops} sequences", param="stop")
        return req, tuple(s for s in stops if s)

    def settings_for(req, stops, prompt_tokens: int) -> GenSettings:
        asked = req.max_completion_tokens or req.max_tokens
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        if asked is not None and asked > limits.max_tokens:
            raise ApiError(400, f"{param}: at most {limits.max_tokens} tokens per completion here (got {asked})",
                           param=param)
        room = (ctx - prompt_tokens) if ctx else limits.max_tokens
        if room < 1 or (asked is not None and asked > room):
            raise ApiError(400, f"the prompt has {prompt_tokens} tokens and the model's context is {ctx}: "
                           f"{'no room' if room < 1 else f'room for {room}'} to generate", param="messages",
                           code="context_length_exceeded")
        sample = req.temperature > 0
        seed = req.seed if req.seed is not None else (int.from_bytes(uuid.uuid4().bytes[:4], "big") if sample else 0)
        return GenSettings(max_new_tokens=asked or min(limits.max_tokens, room), do_sample=sample,
                           temperature=req.temperature if sample else 0.8, top_p=req.top_p if sample else 0.95,
                           n=req.n if sample else 1, stop=stops, seed=seed)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        app.state.stats["requests"] += 1
        try:
            check_key(request)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_body_bytes:
                await read_body(request)  # drains (and drops) it, then answers 413
            if app.state.pending >= limits.max_pending:
                raise ApiError(429, f"server busy: {limits.max_pending} requests in flight; retry shortly",
                               "rate_limit_error", code="server_busy")
            app.state.pending += 1
        except ApiError as e:
            return error(e)
        try:
            req, stops = parse(await read_body(request))
            messages = [{"role": m.role, "content": m.content if isinstance(m.content, str)
                         else "".join(p.text for p in m.content)} for m in req.messages]
            try:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception as e:  # e.g. a template that demands alternating roles
                raise ApiError(400, f"messages: the model's chat template cannot render them ({e})",
                               param="messages") from None
            prompt_tokens = len(tok(text, add_special_tokens=False)["input_ids"])
            settings = settings_for(req, stops, prompt_tokens)
            outs = await asyncio.wrap_future(app.state.batcher.submit(messages, settings))
        except ApiError as e:
            return error(e)
        finally:
            app.state.pending -= 1
        if len(outs) < req.n:  # greedy decoding: n identical completions, generated once
            outs = outs * req.n
        choices, completion_tokens = [], 0
        for i, out in enumerate(outs[: req.n]):
            k = len(tok(out, add_special_tokens=False)["input_ids"])
            completion_tokens += k
            # sftmix's generate strips the stop token; a reply as long as the budget most likely hit it
            finish = "length" if k >= settings.max_new_tokens else "stop"
            choices.append({"index": i, "message": {"role": "assistant", "content": out}, "finish_reason": finish,
                            "logprobs": None})
        app.state.stats["completions"] += len(choices)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    return app


# ----------------------------------------------------------------------------------------------------- server


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning"):
    import uvicorn

    # h11 refuses oversized headers itself; the body cap lives in the app. Keep-alive idle sockets are closed soon.
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                            limit_concurrency=None, server_header=False)
    return uvicorn.Server(config)


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0):
    """Run `app` under uvicorn in a background thread (port 0: a free one); yields the base URL (`.../v1`)."""
    server = build_server(app, host, port)
    thread = threading.Thread(target=server.run, name="sftmix-serve", daemon=True)
    thread.start()
    t0 = time.time()
    while not server.started:
        if not thread.is_alive() or time.time() - t0 > timeout:
            raise SftmixError(f"serve: the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout)
        batcher = getattr(app.state, "batcher", None)
        if batcher:
            batcher.close()


def serve(model: str | None, adapter: str | None = None, stage: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, chat_template: str = "auto", limits: Limits = Limits(), api_key_env: str | None = None,
          name: str | None = None) -> None:
    import os

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise SftmixError(f"--api-key-env: environment variable {api_key_env} is not set")
    if not is_loopback(host) and api_key is None:
        print(f"warning: serving on {host} without an API key: anyone who can reach this port can use the model "
              "(add --api-key-env VAR)", file=sys.stderr)
    m, tok, served = load_served(model, adapter, stage, chat_template)
    app = create_app(m, tok, name or served, limits, api_key)
    print(f"serving {name or served} at http://{host}:{port}/v1 (Ctrl-C to stop)", file=sys.stderr)
    build_server(app, host, port, log_level="info").run()
