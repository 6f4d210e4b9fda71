"""LLM labeler against a real local HTTP server process (tests/llm_server.py), never a mocked function."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llm_server import running_server
from radfinder.errors import ConfigError
from radfinder.text.llm import AnswerCache, LLMConfig, LLMError, LLMLabeler, parse_yes_no

FINDINGS = ("Medical material", "Cardiomegaly", "Pleural effusion", "Emphysema", "Lung nodule")
REPORTS = [
    "A port catheter is seen. Small right pleural effusion. Emphysema in both upper lobes.",
    "No pleural effusion. A 4 mm nodule in the right lower lobe. Cardiomegaly.",
    "Normal chest CT. No nodule.",
]
EXPECTED = [
    {"Medical material": 1, "Cardiomegaly": 0, "Pleural effusion": 1, "Emphysema": 1, "Lung nodule": 0},
    {"Medical material": 0, "Cardiomegaly": 1, "Pleural effusion": 0, "Emphysema": 0, "Lung nodule": 1},
    {"Medical material": 0, "Cardiomegaly": 0, "Pleural effusion": 0, "Emphysema": 0, "Lung nodule": 0},
]


llm_server = running_server


def _cfg(base: str, tmp_path: Path | None = None, **kw) -> LLMConfig:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return LLMConfig(base_url=base, model="test-model", cache_dir=tmp_path, **kw)


def test_parse_yes_no():
    assert parse_yes_no("Yes") == 1
    assert parse_yes_no("no.") == 0
    assert parse_yes_no("**Yes**, it does.") == 1
    assert parse_yes_no("<think>Is there no effusion? yes maybe no</think>\nNo") == 0
    assert parse_yes_no("<think>unfinished reasoning with yes") is None
    assert parse_yes_no("Answer: yes") == 1
    assert parse_yes_no("Maybe") is None
    assert parse_yes_no("") is None
    assert parse_yes_no("Yes or no, hard to say") is None


def test_labels_and_cache_hits(tmp_path):
    with llm_server() as (base, stats):
        lab = LLMLabeler(_cfg(base, tmp_path, concurrency=4))
        assert lab.label_reports(REPORTS, FINDINGS) == EXPECTED
        first = stats()["requests"]
        assert first == len(REPORTS) * len(FINDINGS)
        again = LLMLabeler(_cfg(base, tmp_path, concurrency=4))
        assert again.label_reports(REPORTS, FINDINGS) == EXPECTED
        assert stats()["requests"] == first  # every answer came from the on-disk cache
        assert again.stats.cache_hits == first
        # a different model must not reuse the cache
        other = LLMLabeler(LLMConfig(base_url=base, model="other", cache_dir=tmp_path, backoff_s=0.01))
        other.label_reports(REPORTS[:1], FINDINGS[:1])
        assert stats()["requests"] == first + 1


def test_retries_on_server_errors_and_429(tmp_path):
    for code in ("500", "429"):
        with llm_server("--fail", "3", "--fail-code", code) as (base, stats):
            lab = LLMLabeler(_cfg(base, None, max_retries=4, concurrency=1))
            assert lab.label_reports(REPORTS[:1], FINDINGS[:1]) == [{"Medical material": 1}]
            assert stats()["requests"] == 4
            assert lab.stats.retries == 3


def test_gives_up_after_max_retries():
    with llm_server("--fail", "100") as (base, stats):
        lab = LLMLabeler(_cfg(base, None, max_retries=2))
        with pytest.raises(LLMError, match="failed after 3 attempts"):
            lab.answer(REPORTS[0], "Is there a catheter (medical material)?")
        assert stats()["requests"] == 3


def test_client_errors_are_not_retried():
    with llm_server() as (base, stats):
        lab = LLMLabeler(LLMConfig(base_url=base.replace("/v1", "/nope"), model="m", backoff_s=0.01))
        with pytest.raises(LLMError, match="HTTP 404"):
            lab.answer("r", "q")
        assert stats()["requests"] == 1


def test_timeout_is_retried_then_fails():
    with llm_server("--slow", "1.0") as (base, stats):
        lab = LLMLabeler(_cfg(base, None, timeout_s=0.2, max_retries=1))
        t0 = time.perf_counter()
        with pytest.raises(LLMError, match="TimeoutError|timed out"):
            lab.answer(REPORTS[0], "Medical material?")
        assert time.perf_counter() - t0 < 5
        assert stats()["requests"] == 2


def test_invalid_answer_is_asked_again_then_minus_one(tmp_path):
    with llm_server("--invalid", "1") as (base, stats):
        lab = LLMLabeler(_cfg(base, tmp_path, invalid_retries=1))
        assert lab.label_reports(REPORTS[:1], FINDINGS[:1]) == [{"Medical material": 1}]
        assert lab.stats.invalid == 1
    with llm_server("--invalid", "100") as (base, stats):
        lab = LLMLabeler(_cfg(base, tmp_path / "c2", invalid_retries=2))
        assert lab.label_reports(REPORTS[:1], FINDINGS[:1]) == [{"Medical material": -1}]
        assert stats()["requests"] == 3
        assert not any((tmp_path / "c2").rglob("*.json"))  # invalid answers are never cached


def test_reasoning_tags(tmp_path):
    with llm_server("--think") as (base, _):
        lab = LLMLabeler(_cfg(base, tmp_path))
        assert lab.label_reports(REPORTS, FINDINGS) == EXPECTED


def test_concurrency_bound():
    with llm_server("--slow", "0.15") as (base, stats):
        lab = LLMLabeler(_cfg(base, None, concurrency=3))
        lab.label_reports(REPORTS * 2, FINDINGS[:2])  # 12 requests
        s = stats()
        assert s["requests"] == 12
        assert s["peak"] == 3


def test_config_from_env(monkeypatch):
    monkeypatch.delenv("RADFINDER_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("RADFINDER_LLM_MODEL", raising=False)
    with pytest.raises(ConfigError, match="RADFINDER_LLM_BASE_URL"):
        LLMConfig.from_env()
    monkeypatch.setenv("RADFINDER_LLM_BASE_URL", "http://h/v1")
    monkeypatch.setenv("RADFINDER_LLM_MODEL", "m")
    monkeypatch.setenv("RADFINDER_LLM_API_KEY", "k")
    cfg = LLMConfig.from_env(concurrency=2)
    assert (cfg.base_url, cfg.model, cfg.api_key, cfg.concurrency) == ("http://h/v1", "m", "k", 2)


def test_cache_key_depends_on_model_report_question():
    k = AnswerCache.key("m", "report", "q")
    assert k == AnswerCache.key("m", "report", "q")
    assert (
        len(
            {
                k,
                AnswerCache.key("m2", "report", "q"),
                AnswerCache.key("m", "report2", "q"),
                AnswerCache.key("m", "report", "q2"),
            }
        )
        == 4
    )
