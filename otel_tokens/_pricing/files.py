"""Price tables as files: the bundled one, and a deployment's own in JSON or YAML.

A file is a list of rows, one per model, day and long-context tier:

    {"version": 1, "prices": [
        {"model": "o3", "effective": "2025-06-10", "input": "2", "output": "8",
         "cache_read": "0.50", "source": "https://openai.com/api/pricing"}]}

Prices are USD per million tokens. `provider`, `source` and `note` are for people and are
not checked; any other unknown field is an error, so that a typo never prices a class at the
default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from otel_tokens._pricing.prices import ModelPrice

FILE_VERSION = 1
_PRICE_FIELDS = frozenset(
    {
        "input",
        "output",
        "cache_read",
        "cache_write",
        "cache_write_1h",
        "reasoning",
        "effective",
        "above_input_tokens",
    }
)
_NOTE_FIELDS = frozenset({"model", "provider", "source", "note"})

#: A file's rows by model, and where they were read (for messages).
Rows = tuple[dict[str, list[ModelPrice]], str]


def read_bundled() -> Rows:
    """The rows of the package's own table."""
    text = resources.files("otel_tokens").joinpath("prices.json").read_text("utf-8")
    where = "otel_tokens/prices.json"
    return parse(json.loads(text), where), where


def read_file(path: object) -> Rows:
    """Read a JSON or YAML price file; errors name the file, the row and the field."""
    if not isinstance(path, (str, os.PathLike)):
        msg = f"a price file path must be a str or path, got {path!r}"
        raise ValueError(msg)
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        msg = f"price file {str(file)!r} must end in .json, .yaml or .yml"
        raise ValueError(msg)
    try:
        text = file.read_text("utf-8")
    except OSError as exc:
        msg = f"cannot read price file {str(file)!r}: {exc.strerror or exc}"
        raise ValueError(msg) from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"price file {str(file)!r} is not valid JSON: {exc}"
            raise ValueError(msg) from None
    else:
        data = _load_yaml(text, file)
    return parse(data, str(file)), str(file)


def _load_yaml(text: str, file: Path) -> object:
    try:
        import yaml
    except ImportError:
        msg = (
            f"reading the YAML price file {str(file)!r} needs PyYAML: "
            "pip install 'otel_tokens[yaml]', or write the file as JSON"
        )
        raise ImportError(msg) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"price file {str(file)!r} is not valid YAML: {exc}"
        raise ValueError(msg) from None


def parse(data: object, where: str) -> dict[str, list[ModelPrice]]:
    """Turn a parsed price file into its rows by model.

    Raises:
        ValueError: naming `where`, the row and the field that is wrong.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("prices"), list):
        msg = f"{where}: a price file is a mapping with a 'prices' list of rows"
        raise ValueError(msg)
    version = data.get("version", FILE_VERSION)
    if version != FILE_VERSION:
        msg = f"{where}: version {version!r} is not supported; this package reads version 1"
        raise ValueError(msg)
    by_model: dict[str, list[ModelPrice]] = {}
    for index, row in enumerate(data["prices"]):
        model, price = _row(row, f"{where}: row {index}")
        by_model.setdefault(model, []).append(price)
    return by_model


def _row(row: object, where: str) -> tuple[str, ModelPrice]:
    if not isinstance(row, Mapping):
        msg = f"{where}: each row is a mapping, got {row!r}"
        raise ValueError(msg)
    model = row.get("model")
    if not isinstance(model, str) or not model:
        msg = f"{where}: 'model' must be a non-empty string, got {model!r}"
        raise ValueError(msg)
    unknown = set(row) - _PRICE_FIELDS - _NOTE_FIELDS
    if unknown:
        msg = (
            f"{where} ({model}): unknown fields {sorted(unknown)}; prices are "
            f"{sorted(_PRICE_FIELDS)}"
        )
        raise ValueError(msg)
    for required in ("input", "output"):
        if row.get(required) is None:
            msg = f"{where} ({model}): '{required}' (USD per million tokens) is required"
            raise ValueError(msg)
    fields: dict[str, Any] = {k: v for k, v in row.items() if k in _PRICE_FIELDS}
    try:
        return model, ModelPrice(**fields)
    except ValueError as exc:
        msg = f"{where} ({model}): {exc}"
        raise ValueError(msg) from None
