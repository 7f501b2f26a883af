"""An OpenAI-compatible ``chat/completions`` client (standard-library HTTP), greedy: what the llm judge
asks when ``judge.endpoint`` is set, in both of its modes (pairwise verdicts, DNO's rubric).

``judge.model`` names the served model, the key comes from the environment variable
``judge.api_key_env``, requests run ``judge.batch_size`` at a time, ``judge.timeout_s`` each.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

DEFAULT_ENDPOINT_TOKENS = 16


class ChatEndpoint:
    """An OpenAI-compatible chat/completions endpoint (standard library only), greedy.

    ``request(prompt)`` asks with ``logprobs: true, top_logprobs: 20`` when ``logprobs`` is set; a
    server that refuses log-probs (HTTP 400) is asked again without them, and never again with them.
    Connection failures and HTTP errors are retried, then raised (a judge that cannot be reached must
    stop the stage); a 200 answer that is not a JSON object gives None (the caller abstains).
    """

    def __init__(self, url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 max_tokens: int = DEFAULT_ENDPOINT_TOKENS, concurrency: int = 8, retries: int = 2,
                 logprobs: bool = True):
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.timeout_s, self.max_tokens = model, timeout_s, max_tokens
        self.api_key = os.environ.get(api_key_env or "OPENAI_API_KEY", "")
        self.concurrency, self.retries = max(1, concurrency), retries
        self.logprobs = logprobs

    def each(self, fn: Callable, items: Sequence) -> list:
        """[fn(item) for item in items], `concurrency` requests at a time."""
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def texts(self, prompts: Sequence[str], max_tokens: Sequence[int] | None = None) -> list[str | None]:
        """The answer text per prompt (None: no usable answer), with a token budget per prompt."""
        budgets = list(max_tokens) if max_tokens is not None else [self.max_tokens] * len(prompts)
        return self.each(lambda pb: completion_text(self.request(*pb)), list(zip(prompts, budgets)))

    def request(self, prompt: str, max_tokens: int | None = None) -> dict | None:
        attempt = 0
        while attempt <= self.retries:
            with_logprobs = self.logprobs
            payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens or self.max_tokens, "temperature": 0.0}
            if with_logprobs:
                payload.update(logprobs=True, top_logprobs=20)
            headers = {"Content-Type": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            req = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    raw = r.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode(errors="replace")
                if e.code == 400 and with_logprobs:
                    self.logprobs = False   # e.g. a server without log-prob support: ask for text only
                    continue                # (not counted as a retry)
                if (e.code in (408, 429) or e.code >= 500) and attempt < self.retries:
                    time.sleep(0.5 * 2 ** attempt)
                    attempt += 1
                    continue
                raise RuntimeError(f"llm judge endpoint {self.url} answered HTTP {e.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt < self.retries:
                    time.sleep(0.5 * 2 ** attempt)
                    attempt += 1
                    continue
                raise RuntimeError(f"llm judge endpoint {self.url} unreachable: {e}") from None
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                return None
            return body if isinstance(body, dict) else None
        raise RuntimeError(f"llm judge endpoint {self.url}: no answer after {self.retries + 1} attempts")

    def close(self) -> None:
        pass


def completion_text(body: dict | None) -> str | None:
    """The first choice's message text of a chat/completions answer, or None."""
    try:
        text = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None
