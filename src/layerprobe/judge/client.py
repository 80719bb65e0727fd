"""A judge model behind any OpenAI-compatible chat endpoint, through the `openai` client: one call per
(trace, behaviour), its outcome classified honestly (docs/judge.md#outcomes).

    client = JudgeClient(endpoint, "gpt-4o-mini", key_env="OPENAI_API_KEY")
    client.check()                       # UserError on a bad endpoint, key or model name (before any work)
    answer = client.ask(messages, rule)  # Answer: outcome, count, reply, tokens, attempts

The client's own retries (exponential backoff with jitter, Retry-After honoured) cover 408, 409, 429,
5xx, lost connections and timeouts. The key is read from an environment variable and never stored:
any reply or error text that contains it has it replaced by "<key>".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from layerprobe.errors import UserError
from layerprobe.judge.taxonomy import MAX_COUNT, ReadRule, read_count

_CONTEXT = re.compile(
    r"context[ _-]?(length|size|window)|max(imum)?[ _-]?(model[ _-]?)?(len|length)\b|prompt (is )?too long|"
    r"takes at most|longer than the model|too many tokens|exceeds? the (model|available)",
    re.IGNORECASE,
)
"""What endpoints say when a prompt does not fit the model's context (OpenAI, vLLM, llama.cpp, SGLang,
transformers serve)."""
PREFLIGHT = [{"role": "user", "content": "Reply with the word OK."}]
PREFLIGHT_TIMEOUT = 60.0
"""Seconds the check before any work waits at least (a server's first call may load the model)."""


def display_endpoint(url: str) -> str:
    """The endpoint as stored and shown: scheme, host, port and path, without user info, query or
    fragment (where keys sometimes hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def check_endpoint_url(url: str, flag: str = "--endpoint") -> str:
    """`url` when it is an http(s) URL with a host (and a port from 1 to 65535, no spaces or control
    characters, no user, query or fragment), else a UserError naming `flag` and saying what is valid."""
    valid = "expected an http(s) URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise UserError(f"{flag} {url!r}: a URL holds no spaces or control characters; {valid}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # an unclosed [IPv6 address, a port that is not a number from 0 to 65535
        raise UserError(f"{flag} {url}: not a URL ({exc}); {valid}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise UserError(f"{flag} {url}: {valid}")
    if parts.username or parts.password:
        raise UserError(f"{flag}: give the key in an environment variable (--api-key-env), not inside the URL")
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise UserError(
            f"{flag} {display_endpoint(url)}?...: give the URL without a ?query or #fragment (the client appends the "
            "API's paths to it; a key goes in an environment variable, --api-key-env)"
        )
    return url


def request_sha(model: str, messages: list[dict[str, str]], temperature: float, max_tokens: int) -> str:
    """SHA-1 of everything that determines a reply: identical requests share one call."""
    blob = json.dumps([model, messages, temperature, max_tokens], sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Answer:
    """One call's outcome (the fields of a stored JudgeCall that the call decides)."""

    outcome: str
    count: int | None = None
    reason: str = ""
    reply: str | None = None
    finish_reason: str | None = None
    served_model: str | None = None
    reply_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 1
    status_code: int | None = None
    retryable: bool = False
    started: float = 0.0
    seconds: float = 0.0
    fatal: str = ""
    """Set when no further call can succeed (the key was refused, the model is gone): the job stops."""


def _first_line(text: object, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line[:limit]


def _message(exc: Any) -> str:
    """What an endpoint said in a failed call, in one line: OpenAI's error.message, FastAPI's detail, or
    the client's own message."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        for key in ("message", "detail"):
            value = inner.get(key) if isinstance(inner, dict) else None
            if value:
                return _first_line(value if isinstance(value, str) else json.dumps(value))
        if isinstance(body.get("detail"), str):
            return _first_line(body["detail"])
    elif isinstance(body, str) and body.strip():
        return _first_line(body)
    return _first_line(getattr(exc, "message", exc))


def _openai() -> Any:
    try:
        import openai
    except ImportError:
        raise UserError("layerprobe judge needs the openai client: pip install 'layerprobe[judge]'") from None
    return openai


class JudgeClient:
    """A chat endpoint and a judge model, with the settings every call shares."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 4096,
        timeout: float = 120.0,
        retries: int = 4,
        endpoint_flag: str = "--endpoint",
    ) -> None:
        self.endpoint, self.model, self.key_env = check_endpoint_url(endpoint, endpoint_flag), model, key_env
        self.endpoint_flag = endpoint_flag
        self.temperature, self.max_tokens, self.timeout, self.retries = temperature, max_tokens, timeout, retries
        self._key = os.environ.get(key_env) or ""
        openai = _openai()
        self._openai = openai
        self._client = openai.OpenAI(base_url=endpoint, api_key=self._key or "none", timeout=timeout, max_retries=retries)

    def close(self) -> None:
        self._client.close()

    def redact(self, text: str | None) -> str | None:
        """`text` with the key replaced by "<key>" (an endpoint may echo it in an error)."""
        if text is None or not self._key:
            return text
        return text.replace(self._key, "<key>")

    # -- before any work -------------------------------------------------------------------------
    def check(self) -> None:
        """Ask the endpoint for its models and make one tiny chat call; a UserError in one line when the
        endpoint cannot be reached, refuses the key, does not know the model or refuses the settings."""
        oa = self._openai
        where = f"{self.endpoint_flag} {display_endpoint(self.endpoint)}"
        quick = self._client.with_options(timeout=max(self.timeout, PREFLIGHT_TIMEOUT), max_retries=1)
        served: list[str] | None = None
        try:
            served = [m.id for m in quick.models.list()]
        except oa.NotFoundError:
            served = None  # some endpoints have no /models; the chat call below decides
        except oa.APIStatusError as exc:
            raise UserError(self._refusal(where, exc)) from None
        except (oa.APIConnectionError, oa.APITimeoutError) as exc:
            raise UserError(
                f"{where}: no answer ({_first_line(exc)}); is the server running, and does the URL end in /v1?"
            ) from None
        try:
            quick.chat.completions.create(model=self.model, messages=PREFLIGHT, max_tokens=1, temperature=self.temperature)
        except oa.APIStatusError as exc:
            if exc.status_code in (400, 404, 422) and served is not None and self.model not in served:
                listed = ", ".join(served[:8]) + (f", ... ({len(served)} in all)" if len(served) > 8 else "")
                raise UserError(
                    f"--judge-model {self.model}: {where} serves no such model; it serves: {listed or 'none'}"
                ) from None
            if exc.status_code == 404 and served is None:
                raise UserError(f"{where}: no OpenAI-compatible chat API there (404); the URL usually ends in /v1") from None
            raise UserError(self._refusal(where, exc)) from None
        except (oa.APIConnectionError, oa.APITimeoutError) as exc:
            raise UserError(f"{where}: the test call got no answer ({_first_line(exc)})") from None

    def _refusal(self, where: str, exc: Any) -> str:
        status = getattr(exc, "status_code", None)
        message = self.redact(_message(exc))
        if status in (401, 403):
            unset = "is empty" if self.key_env in os.environ else "is not set"
            key = f"the key in ${self.key_env}" if self._key else f"the request without a key (${self.key_env} {unset})"
            return f"{where} refused {key} ({status}: {message})"
        return f"{where} refused the request ({status}: {message})"

    # -- the calls -------------------------------------------------------------------------------
    def ask(self, messages: list[dict[str, str]], rule: ReadRule) -> Answer:
        """One chat call (the client retries 429, 5xx, timeouts and lost connections with backoff), its
        outcome classified: a count, or why there is none. Never raises for what the endpoint does."""
        oa = self._openai
        started = time.time()
        t0 = time.perf_counter()
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
            )
            attempts = 1 + int(getattr(raw, "retries_taken", 0) or 0)
            try:
                answer = self.classify(raw.parse(), rule)
            except Exception as exc:  # noqa: BLE001 - a 200 whose body is no chat completion (a proxy's HTML, cut JSON)
                why = f"the reply could not be read ({type(exc).__name__}: {_first_line(exc)})"
                answer = Answer("error", reason=why, retryable=True)  # asked again by a later run, as a 5xx
            answer.attempts = attempts
        except oa.APITimeoutError:
            answer = Answer("timeout", reason=f"no reply within {self.timeout:g} s", attempts=1 + self.retries, retryable=True)
        except oa.APIConnectionError as exc:
            answer = Answer("error", reason=f"connection failed: {_first_line(exc)}", attempts=1 + self.retries, retryable=True)
        except oa.APIStatusError as exc:
            answer = self._status_failure(exc)
        answer.reason = self.redact(answer.reason) or ""
        answer.reply = self.redact(answer.reply)
        answer.started, answer.seconds = started, time.perf_counter() - t0
        return answer

    def _status_failure(self, exc: Any) -> Answer:
        status = int(exc.status_code)
        message = _message(exc)
        code = str(getattr(exc, "code", "") or "")
        transient = status in (408, 409, 429) or status >= 500
        attempts = 1 + self.retries if transient else 1
        if status in (400, 413, 422) and (code == "context_length_exceeded" or _CONTEXT.search(message)):
            return Answer("too_long", reason=message, status_code=status)
        if status in (401, 403):
            return Answer(
                "error", reason=message, status_code=status, fatal=f"the endpoint refused the key ({status}: {message})"
            )
        if status == 404:
            return Answer("error", reason=message, status_code=status, fatal=f"the endpoint answered 404 ({message})")
        return Answer("error", reason=f"{status}: {message}", status_code=status, retryable=transient, attempts=attempts)

    def classify(self, completion: Any, rule: ReadRule) -> Answer:
        """The outcome of a reply that came back: refused (the model's refusal field, or the endpoint's
        content filter), unparsable (no count by the rule, or cut at max_tokens before it ended) or count."""
        usage = getattr(completion, "usage", None)
        choices = getattr(completion, "choices", None) or []
        choice = choices[0] if choices else None
        message = getattr(choice, "message", None)
        text = _text(getattr(message, "content", None))
        finish = _text(getattr(choice, "finish_reason", None), 100)
        refusal = _text(getattr(message, "refusal", None))
        count, reason = None, ""
        if choice is None:
            outcome, reason = "error", "the reply has no choices"
        elif refusal:
            outcome, reason = "refused", _first_line(refusal)
        elif finish == "content_filter":
            outcome, reason = "refused", "the endpoint's content filter stopped the reply"
        elif finish == "length":
            outcome, reason = "unparsable", f"the reply was cut at max_tokens ({self.max_tokens}) before it ended"
        else:
            reading = read_count(text, rule)
            outcome, count, reason = ("count" if reading.count is not None else "unparsable"), reading.count, reading.reason
        return Answer(
            outcome,
            count=count,
            reason=reason,
            reply=text,
            finish_reason=finish,
            served_model=_text(getattr(completion, "model", None), 300),
            reply_id=_text(getattr(completion, "id", None), 300),
            prompt_tokens=_tokens(getattr(usage, "prompt_tokens", None)),
            completion_tokens=_tokens(getattr(usage, "completion_tokens", None)),
        )


def _text(value: Any, limit: int | None = None) -> str | None:
    """A text field of a reply as stored: None when the endpoint sent something else (a number, a list)
    in its place; names and ids cut at `limit` characters."""
    if not isinstance(value, str):
        return None
    return value if limit is None else value[:limit]


def _tokens(value: Any) -> int | None:
    """A token count of a reply's usage as stored: None when it is not a whole number from 0 to MAX_COUNT
    (an endpoint that reports -5 or 10^30 tokens has not counted them)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        return None
    return value
