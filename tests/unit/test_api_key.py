"""The API key never leaves the process: only a keyed fingerprint, and only when opted in."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest

from otel_tokens import Usage
from otel_tokens.testing import InMemoryMetrics

KEY = "sk-live-THIS-IS-A-SECRET-0123456789"
SECRET = "per-deployment-secret-0123456789"


def _everything_exported(metrics: InMemoryMetrics) -> str:
    return repr(metrics.reader.get_metrics_data().to_json())  # type: ignore[union-attr]


def test_key_is_not_exported_without_opt_in(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    metrics = InMemoryMetrics()
    metrics.tracker.record(Usage(provider="openai", model="gpt-4o", api_key=KEY, input_tokens=-1))
    metrics.tracker.record(Usage(provider="openai", model="gpt-4o", api_key=KEY))
    exported = _everything_exported(metrics)
    assert KEY not in exported and "llm.api_key.id" not in exported
    assert all(KEY not in record.getMessage() for record in caplog.records)
    assert caplog.records  # the drop above was logged, without the key


def test_opted_in_key_is_exported_as_its_hmac_fingerprint_only() -> None:
    metrics = InMemoryMetrics(opt_in_attributes=["llm.api_key.id"], api_key_secret=SECRET)
    metrics.tracker.record(Usage(provider="openai", model="gpt-4o", api_key=KEY))
    metrics.tracker.record(Usage(provider="openai", model="gpt-4o", api_key="sk-other-key"))
    expected = hmac.new(SECRET.encode(), KEY.encode(), hashlib.sha256).hexdigest()[:16]
    assert metrics.value("llm.requests", {"llm.api_key.id": expected}) == 1
    assert len(metrics.points("llm.requests")) == 2
    assert KEY not in _everything_exported(metrics)


def test_secret_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TOKENS_API_KEY_SECRET", SECRET)
    metrics = InMemoryMetrics(opt_in_attributes=["llm.api_key.id"])
    metrics.tracker.record(Usage(provider="openai", model="gpt-4o", api_key=KEY))
    (point,) = metrics.points("llm.requests")
    assert len(point.attributes["llm.api_key.id"]) == 16


def test_opting_in_without_a_secret_fails_at_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TOKENS_API_KEY_SECRET", raising=False)
    with pytest.raises(ValueError, match=r"llm\.api_key\.id needs a secret"):
        InMemoryMetrics(opt_in_attributes=["llm.api_key.id"])


def test_short_secret_fails_at_setup() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes, got 5"):
        InMemoryMetrics(opt_in_attributes=["llm.api_key.id"], api_key_secret="short")


def test_other_opt_in_attributes_appear_only_when_asked() -> None:
    plain = InMemoryMetrics()
    opted = InMemoryMetrics(opt_in_attributes=["llm.provider.uuid", "llm.rule.uuid"])
    usage = Usage(provider="openai", model="gpt-4o", provider_uuid="up-1", rule_uuid="rule-9")
    plain.tracker.record(usage)
    opted.tracker.record(usage)
    (point,) = plain.points("llm.requests")
    assert "llm.provider.uuid" not in point.attributes and "llm.rule.uuid" not in point.attributes
    assert (
        opted.value("llm.requests", {"llm.provider.uuid": "up-1", "llm.rule.uuid": "rule-9"}) == 1
    )


def test_key_is_not_in_usage_repr_nor_in_a_type_error_message() -> None:
    usage = Usage(provider="openai", model="gpt-4o", api_key=KEY)
    assert KEY not in repr(usage) and KEY not in str(usage)
    bad = Usage(provider="openai", model="gpt-4o", api_key=12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="api_key must be a str, got int") as raised:
        bad.validate()
    assert "12345" not in str(raised.value)
