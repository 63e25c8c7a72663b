"""Attribute names and values used on every instrument (one place, no string copies)."""

from __future__ import annotations

PROVIDER = "gen_ai.provider.name"
OPERATION = "gen_ai.operation.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
TOKEN_TYPE = "gen_ai.token.type"
STATUS = "llm.status"
STREAMING = "llm.streaming"
SCENARIO = "llm.scenario"
USER_TIER = "llm.user.tier"
TEAM = "llm.team"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
SERVICE_TIER = "openai.response.service_tier"
PROVIDER_UUID = "llm.provider.uuid"
RULE_UUID = "llm.rule.uuid"
API_KEY_ID = "llm.api_key.id"
USAGE_PROBLEM = "llm.usage.problem"
DROP_REASON = "reason"
BUDGET_SCOPE = "llm.budget.scope"
BUDGET_SUBJECT = "llm.budget.subject"
BUDGET_PERIOD = "llm.budget.period"
BUDGET_UNIT = "llm.budget.unit"

#: Attributes a deployment must ask for, because each can have many values.
OPT_IN_ATTRIBUTES = frozenset({PROVIDER_UUID, RULE_UUID, API_KEY_ID, SERVICE_TIER})

#: The attribute the SDK itself puts on its overflow series; reused so that one query finds both.
OVERFLOW = "otel.metric.overflow"

#: `error.type` when a request failed and nobody said how (the semantic conventions' fallback).
OTHER_ERROR = "_OTHER"

#: What a model outside the allow-list is reported as.
OTHER_MODEL = "other"

STATUSES = ("success", "error", "canceled")

#: Why a record's token counts are not the provider's whole report (`Usage.usage_problem`).
USAGE_PROBLEMS = ("missing", "malformed", "partial")

#: Which limit a rate-limit gauge reports: requests, tokens, input_tokens, output_tokens,
#: or retry_after (the wait a 429 asked for, on `llm.ratelimit.reset` only).
RATELIMIT_KIND = "llm.ratelimit.kind"
