"""LLM labeler: one yes/no question per finding through any OpenAI-compatible chat-completions API.

Standard library only (urllib + threads). Answers are cached on disk keyed by (model, report hash, question), so
re-running over a cohort only asks what is new. Transient failures (HTTP 429/5xx, timeouts, refused connections)
are retried with exponential backoff, honouring Retry-After. An answer that is neither yes nor no is asked again
(bypassing the cache) and becomes -1 if it stays invalid.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, RadfinderError
from .findings import CTRATE_FINDINGS

PROMPT = "Based on the following radiology report:\n{report}\n\n{question} Answer Yes or No only."

QUESTIONS: dict[str, str] = {
    "Medical material": "Does the report describe medical material in the chest, such as a catheter, port, "
    "pacemaker, stent, prosthetic valve, sternotomy wires or surgical clips?",
    "Arterial wall calcification": "Does the report describe calcification or calcified atherosclerotic plaques "
    "in the wall of the thoracic aorta or other non-coronary arteries?",
    "Cardiomegaly": "Does the report describe cardiomegaly (an enlarged heart)?",
    "Pericardial effusion": "Does the report describe a pericardial effusion?",
    "Coronary artery wall calcification": "Does the report describe calcification or calcified plaques in the "
    "coronary arteries?",
    "Hiatal hernia": "Does the report describe a hiatal hernia?",
    "Lymphadenopathy": "Does the report describe lymph nodes or lymphadenopathy that are present?",
    "Emphysema": "Does the report describe pulmonary emphysema or bullae?",
    "Atelectasis": "Does the report describe atelectasis?",
    "Lung nodule": "Does the report describe one or more lung nodules?",
    "Lung opacity": "Does the report describe a lung opacity, such as ground-glass opacity or an infiltrate?",
    "Pulmonary fibrotic sequela": "Does the report describe pulmonary fibrotic sequelae, such as fibrotic bands, "
    "scarring or pleuroparenchymal sequelae?",
    "Pleural effusion": "Does the report describe a pleural effusion?",
    "Mosaic attenuation pattern": "Does the report describe a mosaic attenuation pattern in the lungs?",
    "Peribronchial thickening": "Does the report describe peribronchial or bronchial wall thickening?",
    "Consolidation": "Does the report describe a lung consolidation?",
    "Bronchiectasis": "Does the report describe bronchiectasis?",
    "Interlobular septal thickening": "Does the report describe interlobular septal thickening?",
}


class LLMError(RadfinderError):
    """The LLM endpoint failed after all retries, or answered with something that is not a chat completion."""


@dataclass
class LLMConfig:
    base_url: str
    model: str
    api_key: str = ""
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    invalid_retries: int = 2
    concurrency: int = 8
    temperature: float = 0.0
    max_tokens: int = 1024
    cache_dir: Path | None = None

    @classmethod
    def from_env(cls, **overrides) -> LLMConfig:
        """Fill base URL, model and key from RADFINDER_LLM_BASE_URL / _MODEL / _API_KEY unless given."""
        values = {k: v for k, v in overrides.items() if v is not None}
        values.setdefault("base_url", os.environ.get("RADFINDER_LLM_BASE_URL", ""))
        values.setdefault("model", os.environ.get("RADFINDER_LLM_MODEL", ""))
        values.setdefault("api_key", os.environ.get("RADFINDER_LLM_API_KEY", ""))
        if not values["base_url"] or not values["model"]:
            raise ConfigError(
                "LLM backend needs a base URL and a model: set RADFINDER_LLM_BASE_URL and RADFINDER_LLM_MODEL "
                "(or pass them explicitly)"
            )
        if values.get("concurrency", 1) < 1:
            raise ConfigError("LLM concurrency must be >= 1")
        return cls(**values)


_THINK = re.compile(r"<think>.*?</think>|<think>.*$|<reasoning>.*?</reasoning>", re.DOTALL | re.IGNORECASE)
_YES = re.compile(r"\b(?:yes|ja|true)\b", re.IGNORECASE)
_NO = re.compile(r"\b(?:no|nein|false)\b", re.IGNORECASE)


def parse_yes_no(text: str | None) -> int | None:
    """1 for yes, 0 for no, None when the answer is not clearly one of them (reasoning tags are ignored)."""
    if not text:
        return None
    body = _THINK.sub(" ", text).strip()
    first = re.match(r"[\W_]*(\w+)", body)
    if first:
        # "Yes, although no effusion elsewhere" is yes; "Yes or no, hard to say" is no answer.
        clause = re.split(r"[.,;:!?\n]", body[first.start(1) :], maxsplit=1)[0]
        w = first.group(1).lower()
        if w in ("yes", "ja", "true"):
            return None if _NO.search(clause) else 1
        if w in ("no", "nein", "false"):
            return None if _YES.search(clause) else 0
    yes, no = bool(_YES.search(body)), bool(_NO.search(body))
    if yes != no:
        return 1 if yes else 0
    return None


class AnswerCache:
    """Raw answers on disk, one small JSON file per (model, report hash, question); safe across threads."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(model: str, report: str, question: str) -> str:
        report_hash = hashlib.sha256(report.encode("utf-8")).hexdigest()
        return hashlib.sha256(f"{model}\0{report_hash}\0{question}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        p = self._path(key)
        try:
            return json.loads(p.read_text(encoding="utf-8"))["answer"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def put(self, key: str, answer: str) -> None:
        p = self._path(key)
        p.parent.mkdir(exist_ok=True)
        tmp = p.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"answer": answer}), encoding="utf-8")
        tmp.replace(p)


@dataclass
class LLMStats:
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    invalid: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


class LLMClient:
    """Chat completions over HTTP with retries and backoff (see module doc)."""

    def __init__(self, config: LLMConfig):
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.stats = LLMStats()

    def ask(self, prompt: str) -> str:
        cfg = self.config
        body = json.dumps(
            {
                "model": cfg.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": cfg.temperature,
                "max_tokens": cfg.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        last = ""
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                self.stats.add(retries=1)
            self.stats.add(requests=1)
            wait = min(cfg.max_backoff_s, cfg.backoff_s * 2**attempt)
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                return _content(payload, self.url)
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    raise LLMError(f"{self.url}: HTTP {exc.code} {exc.reason} (not retried)") from exc
                last = f"HTTP {exc.code}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if retry_after and retry_after.strip().replace(".", "", 1).isdigit():
                    wait = min(cfg.max_backoff_s, float(retry_after))
            except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            except json.JSONDecodeError as exc:
                last = f"invalid JSON ({exc})"
            if attempt < cfg.max_retries:
                time.sleep(wait)
        raise LLMError(f"{self.url}: failed after {cfg.max_retries + 1} attempts (last: {last})")


def _content(payload: dict, url: str) -> str:
    try:
        msg = payload["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMError(f"{url}: response is not a chat completion: {str(payload)[:200]}") from exc
    content = msg.get("content") or ""
    # Servers with a reasoning parser put the thinking in a separate field; only `content` is the answer.
    return content


class LLMLabeler:
    """Label reports by asking one yes/no question per finding; returns CT-RATE-style 1/0/-1 labels."""

    def __init__(self, config: LLMConfig, questions: dict[str, str] | None = None):
        self.config = config
        self.questions = dict(questions or QUESTIONS)
        self.client = LLMClient(config)
        self.cache = AnswerCache(config.cache_dir) if config.cache_dir else None

    @property
    def stats(self) -> LLMStats:
        return self.client.stats

    def answer(self, report: str, question: str) -> int:
        """1/0 for a valid answer, -1 when the model never answered yes or no."""
        prompt = PROMPT.format(report=report, question=question)
        key = AnswerCache.key(self.config.model, report, question)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None and parse_yes_no(cached) is not None:
                self.stats.add(cache_hits=1)
                return parse_yes_no(cached)
        for _ in range(self.config.invalid_retries + 1):
            text = self.client.ask(prompt)
            value = parse_yes_no(text)
            if value is not None:
                if self.cache is not None:
                    self.cache.put(key, text)
                return value
            self.stats.add(invalid=1)
        return -1

    def label_reports(self, reports: Sequence[str], findings: Sequence[str] = CTRATE_FINDINGS) -> list[dict[str, int]]:
        """Labels for every report; at most `config.concurrency` requests are in flight at once."""
        missing = [f for f in findings if f not in self.questions]
        if missing:
            raise ConfigError(f"no LLM question for finding(s) {missing}")
        jobs = [(i, f) for i in range(len(reports)) for f in findings]
        out: list[dict[str, int]] = [dict.fromkeys(findings, -1) for _ in reports]
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            futures = {pool.submit(self.answer, reports[i], self.questions[f]): (i, f) for i, f in jobs}
            for fut, (i, f) in futures.items():
                out[i][f] = fut.result()
        return out
