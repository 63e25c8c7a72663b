"""Extend otel_tokens/prices.json with the models chosen below, priced from LiteLLM's price map.

    python -m tests.helpers.bundled_prices model_prices_and_context_window_backup.json [--write]

The map is the one the `litellm` 1.110.2 wheel on PyPI ships (read, never installed). Rows
already in the bundled table are kept as they are: they were researched one by one. Every
other model is chosen by the rules in `_chosen` (current text, reasoning and embedding
models; no image, audio or video models, no fine-tunes, no regional routing keys, nothing
deprecated before READ_ON, nothing priced 0/0), converted by the package's own importer, and
given a provider, a source and an effective day with a note saying where that day came from.
Prints what it left out and why on stderr. A row it gives READ_ON is dated afterwards by
tests/helpers/price_dates.py from litellm's earlier releases.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from otel_tokens._pricing.litellm import from_litellm

LITELLM = "litellm 1.110.2 model_prices_and_context_window_backup.json"
#: The day the LiteLLM map was read: the effective day of a price whose start was not found.
READ_ON = "2026-12-04"
TABLE = Path(__file__).resolve().parents[2] / "otel_tokens" / "prices.json"

#: LiteLLM provider -> (gen_ai.provider.name, pricing page, key prefix to drop).
PROVIDERS = {
    "openai": ("openai", "https://openai.com/api/pricing", ""),
    "text-completion-openai": ("openai", "https://openai.com/api/pricing", ""),
    "azure": ("azure.ai.openai",
              "https://azure.microsoft.com/en-us/pricing/details/cognitive-services/openai-service/",
              "azure/"),
    "anthropic": ("anthropic", "https://platform.claude.com/docs/en/about-claude/pricing", ""),
    "bedrock": ("aws.bedrock", "https://aws.amazon.com/bedrock/pricing/", ""),
    "bedrock_converse": ("aws.bedrock", "https://aws.amazon.com/bedrock/pricing/", ""),
    "gemini": ("gcp.gemini", "https://ai.google.dev/gemini-api/docs/pricing", "gemini/"),
    "vertex_ai-language-models": ("gcp.vertex_ai",
                                  "https://cloud.google.com/vertex-ai/generative-ai/pricing",
                                  "vertex_ai/"),
    "vertex_ai": ("gcp.vertex_ai", "https://cloud.google.com/vertex-ai/generative-ai/pricing",
                  "vertex_ai/"),
    "vertex_ai-mistral_models": ("gcp.vertex_ai",
                                 "https://cloud.google.com/vertex-ai/generative-ai/pricing",
                                 "vertex_ai/"),
    "vertex_ai-llama_models": ("gcp.vertex_ai",
                               "https://cloud.google.com/vertex-ai/generative-ai/pricing",
                               "vertex_ai/"),
    "mistral": ("mistral_ai", "https://mistral.ai/pricing#api-pricing", "mistral/"),
    "cohere_chat": ("cohere", "https://cohere.com/pricing", ""),
    "cohere": ("cohere", "https://cohere.com/pricing", "cohere/"),
    "deepseek": ("deepseek", "https://api-docs.deepseek.com/quick_start/pricing", "deepseek/"),
    "xai": ("x_ai", "https://docs.x.ai/docs/models", "xai/"),
    "groq": ("groq", "https://groq.com/pricing", "groq/"),
    "together_ai": ("together_ai", "https://www.together.ai/pricing", "together_ai/"),
}  # fmt: skip

#: Parts of a name that mark a model this table does not price: not text, not token-priced,
#: a fine-tune, or a product rather than a model.
_SKIP = re.compile(
    r"^ft:|audio|realtime|tts|transcribe|whisper|image|vision-preview|voxtral|lyria|robotics"
    r"|computer-use|twelvelabs|pegasus|marengo|multimodal-embeddings|prompt-guard|orpheus"
    r"|container|-exp-|gemini-exp|learnlm|gemma-.*-it$|^together-ai-|vibe-cli|medlm|palmyra-vision"
    r"|claude-(instant|v1|v2)|ai21\.j2|model-router|search|experimental|nightly"
)
#: Entries left out by name, each for a reason a reader can check.
LEFT_OUT = {
    "anthropic.claude-3-7-sonnet-20240620-v1:0": "no such Bedrock id (3.7 Sonnet is 20250219)",
    "claude-sonnet-4-5-20250929-v1:0": "a Bedrock id without its 'anthropic.' vendor prefix",
    "embed-multilingual-light-v3.0": "LiteLLM lists $100 per million, 1000x its siblings",
    "vertex_ai/mistral-nemo@2407": "LiteLLM lists $3/$3, 20x mistral-nemo@latest",
    "meta.llama2-13b-chat-v1": "Llama 2 is retired on Bedrock",
    "meta.llama2-70b-chat-v1": "Llama 2 is retired on Bedrock",
    "cohere.command-text-v14": "Command (v14) is retired on Bedrock",
    "cohere.command-light-text-v14": "Command Light (v14) is retired on Bedrock",
}
#: Other makers' models that LiteLLM lists under Mistral's API: not Mistral's to price here.
_HOSTED_ON_MISTRAL = re.compile(r"^mistral/(zai-|glm-|deepseek-)")
#: LiteLLM routing keys, not model ids a provider answers with: Azure regional deployments,
#: Bedrock region paths, Vertex partner paths.
_ROUTING = re.compile(
    r"^azure/(eu|us|us-gov|apac|global|global-standard)/|^bedrock/|^vertex_ai/xai/|"
    r"^anthropic\.claude-haiku-4-5@"
)
#: Bedrock cross-region inference profiles: priced on their own (geo profiles often 10% more).
_REGION = re.compile(r"^(us|eu|apac|au|jp|in|us-gov|global)\.")
_DATED = (
    re.compile(r"-(20\d\d)(\d\d)(\d\d)(?:-v\d+(?::\d+)?)?$"),
    re.compile(r"@(20\d\d)(\d\d)(\d\d)$"),
    re.compile(r"-(20\d\d)-(\d\d)-(\d\d)$"),
)

#: Release days from public announcements (general knowledge, not confirmed in a searched
#: source), for models whose id carries no date.
KNOWN = {
    "text-embedding-ada-002": "2022-12-15",
    "gpt-5-codex": "2025-09-15",
    "gpt-5.1-codex": "2025-11-13",
    "gpt-5.1-codex-mini": "2025-11-13",
    "gemini-2.0-flash-lite": "2025-02-25",
    "gemini-embedding-001": "2025-07-14",
    "gemini-3-pro-preview": "2025-11-18",
    "embed-english-v3.0": "2023-11-02",
    "embed-multilingual-v3.0": "2023-11-02",
    "embed-english-light-v3.0": "2023-11-02",
    "amazon.titan-embed-text-v2:0": "2024-04-30",
    "meta.llama3-3-70b-instruct-v1:0": "2024-12-19",
}

#: Prices known to have changed since launch, whose change day was not found: the launch row
#: (from the pages cited) and the current price from READ_ON.
LAUNCHED = {
    "gpt-5.6-sol": ("2026-06-26", {"input": "5", "output": "30", "cache_read": "0.5",
                                   "cache_write": "6.25"}),
    "gpt-5.6-terra": ("2026-06-26", {"input": "2.5", "output": "15", "cache_read": "0.25",
                                     "cache_write": "3.125"}),
    "gpt-5.6-luna": ("2026-06-26", {"input": "1", "output": "6", "cache_read": "0.1",
                                    "cache_write": "1.25"}),
}  # fmt: skip
LAUNCH_SOURCE = (
    "GPT-5.6 preview announcement of 2026-06-26 as quoted by https://bytechat.io/blog/"
    "gpt-5-6-sol-terra-luna-pricing and https://www.howtonotcode.com/story/2218 ($5/$30, "
    "$2.50/$15, $1/$6; cache writes 1.25x input, cache reads 90% off; "
    "https://www.llmreference.com/model/gpt-5.6-terra lists terra's cache read at $0.25)"
)


#: Which LiteLLM provider's price wins a clash of model names: the model's maker first.
_RANK = {
    "openai": 0,
    "text-completion-openai": 0,
    "anthropic": 0,
    "gemini": 0,
    "mistral": 0,
    "cohere": 0,
    "cohere_chat": 0,
    "deepseek": 0,
    "xai": 0,
    "groq": 2,
    "together_ai": 2,
}


def _rank(key: str, data: dict[str, Any]) -> int:
    return _RANK.get(str(data[key].get("litellm_provider")), 1)


def family(model: str) -> str:
    """`us.anthropic.claude-sonnet-4-5-20250929-v1:0` -> `claude-sonnet-4-5`."""
    name = _REGION.sub("", model)
    name = re.sub(r"^(anthropic|openai|amazon|meta|mistral|cohere|deepseek|qwen|xai)\.", "", name)
    name = re.sub(r"@.*$", "", name)
    name = re.sub(r"-v\d+(:\d+)?$", "", name)
    for pattern in _DATED:
        name = pattern.sub("", name)
    return name


def dated(model: str) -> str | None:
    for pattern in _DATED:
        found = pattern.search(_REGION.sub("", model))
        if found:
            return "-".join(found.groups())
    return None


def _chosen(key: str, entry: dict[str, Any]) -> str | None:
    """Why `key` is left out, or None to price it."""
    if entry.get("litellm_provider") not in PROVIDERS:
        return "provider not covered"
    if entry.get("mode") not in ("chat", "responses", "embedding", "completion"):
        return f"mode {entry.get('mode')}"
    if key in LEFT_OUT:
        return LEFT_OUT[key]
    if _HOSTED_ON_MISTRAL.search(key):
        return "another maker's model as LiteLLM lists it under Mistral"
    if _ROUTING.search(key):
        return "a LiteLLM routing key (region or partner path), not a model id"
    if _SKIP.search(key):
        return "not a current text/reasoning/embedding model"
    deprecated = entry.get("deprecation_date")
    if isinstance(deprecated, str) and deprecated < READ_ON:
        return f"deprecated {deprecated}"
    if not entry.get("input_cost_per_token") and not entry.get("output_cost_per_token"):
        return "no price (0 or missing)"
    return None


def main(argv: list[str]) -> int:
    data = json.loads(Path(argv[0]).read_text("utf-8"))
    table = json.loads(TABLE.read_text("utf-8"))
    kept = table["prices"]
    existing = {row["model"] for row in kept}
    released: dict[tuple[str, str, str], str] = {}  # (family, input, output) -> first day
    for row in kept:
        at = (family(row["model"]), row["input"], row["output"])
        released[at] = min(released.get(at, row["effective"]), row["effective"])
    snapshot: dict[str, str] = {}  # family -> a date read from a sibling's id
    for key in data:
        day = dated(key.split("/")[-1])
        if day:
            fam = family(key.split("/")[-1])
            snapshot[fam] = min(snapshot.get(fam, day), day)
    rows: list[dict[str, Any]] = []
    chosen: dict[str, tuple[str, str]] = {}  # model -> (litellm key, price signature)
    left_out: list[str] = []
    entries = sorted(
        ((k, e) for k, e in data.items() if isinstance(e, dict)),
        key=lambda item: _RANK.get(str(item[1].get("litellm_provider")), 1),
    )
    for key, entry in entries:
        why = _chosen(key, entry)
        if why:
            if entry.get("litellm_provider") in PROVIDERS and "deprecated" not in why:
                left_out.append(f"{key}: {why}")
            continue
        provider, page, prefix = PROVIDERS[entry["litellm_provider"]]
        model = key.removeprefix(prefix)
        priced = entry
        if entry.get("mode") == "embedding" and entry.get("output_cost_per_token") is None:
            priced = {**entry, "output_cost_per_token": 0}  # an embedding has no output tokens
        made, _ = from_litellm({model: priced})
        if not made:
            print(f"skip {key}: the importer refused it", file=sys.stderr)
            continue
        sig = json.dumps([{k: v for k, v in r.items() if k not in ("provider", "source")}
                          for r in made], sort_keys=True)  # fmt: skip
        if model in existing:
            continue
        if model in chosen:
            first = chosen[model][0]
            if chosen[model][1] == sig or chosen[model][1] == "conflict":
                continue
            if _rank(first, data) < _rank(key, data):
                print(f"clash {model}: kept {first} (first party) over {key}, which prices it "
                      "differently", file=sys.stderr)  # fmt: skip
            else:
                print(f"conflict {model}: {first} and {key} price it differently; left out",
                      file=sys.stderr)  # fmt: skip
                chosen[model] = (first, "conflict")
            continue
        chosen[model] = (key, sig)
        if model in LAUNCHED:
            day, launch = LAUNCHED[model]
            rows.append({"model": model, "provider": provider, "effective": day, **launch,
                         "source": f"https://openai.com/api/pricing; {LAUNCH_SOURCE}",
                         "note": "launch price of the limited preview (release date)"})  # fmt: skip
            effective, note = (
                READ_ON,
                (
                    "current price; it replaced the launch price on a day not found, so "
                    f"{READ_ON} is the day it was read, not the day it took effect"
                ),
            )
        else:
            base = made[0]
            effective, note = _effective(
                model, released.get((family(model), base["input"], base["output"])), snapshot
            )
        url = entry.get("source") if str(entry.get("source", "")).startswith("https://") else page
        for row in made:
            row.update(provider=provider, effective=effective,
                       source=f"{url}; read from {LITELLM} ({key})", note=note)  # fmt: skip
        rows.extend(made)
    conflicted = {m for m, (_, sig) in chosen.items() if sig == "conflict"}
    rows = [row for row in rows if row["model"] not in conflicted]
    rows.sort(key=lambda r: (r["provider"], r["model"], r["effective"],
                             r.get("above_input_tokens", 0)))  # fmt: skip
    for row in rows:
        ordered = {k: row[k] for k in ("model", "provider", "effective") if k in row}
        ordered.update({k: v for k, v in row.items() if k not in ordered})
        row.clear()
        row.update(ordered)
    table["prices"] = kept + rows
    table["checked"] = READ_ON
    text = json.dumps(table, indent=1, ensure_ascii=False) + "\n"
    models = {r["model"] for r in table["prices"]}
    print(f"{len(table['prices'])} rows, {len(models)} models ({len(rows)} rows added)",
          file=sys.stderr)  # fmt: skip
    if "--left-out" in argv:
        print("\n".join(left_out), file=sys.stderr)
    if "--write" in argv:
        TABLE.write_text(text, "utf-8")
    return 0


def _effective(model: str, released: str | None, snapshot: dict[str, str]) -> tuple[str, str]:
    fam = family(model)
    own = dated(model)
    if released and (model.startswith(("claude", "anthropic.")) or _REGION.match(model) or not own):
        return released, (
            f"the day {fam} took this price, from its researched row in this table; taken as "
            "the day this id was offered at it"
        )
    if own:
        return own, "release date: the snapshot date in the model id"
    if fam in snapshot:
        return snapshot[fam], (
            f"release date: the snapshot date in the id of a {fam} snapshot listed beside it"
        )
    if model in KNOWN or fam in KNOWN:
        return KNOWN.get(model) or KNOWN[fam], (
            "release date from the provider's announcement (general knowledge, not confirmed "
            "in a searched source)"
        )
    return READ_ON, (
        f"no launch or repricing date found: {READ_ON} is the day this price was read, not the "
        "day it took effect; as the model's only row it also prices earlier days"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
