"""Text made from values nobody checked: short in messages, safe as labels and columns.

Everything here takes what a caller, a request body or a provider sent, so nothing here may
raise: `repr()` of an int of 5,000 digits raises, a `__repr__` may raise, and a lone
surrogate ("\\ud800", which JSON allows) cannot be encoded as UTF-8 by any exporter.
"""

from __future__ import annotations

import re

#: How much of a value a message shows.
SHOWN_CHARS = 80
#: What stands in for a character no exporter, terminal or database may be handed: a lone
#: surrogate, NUL and the other C0 and C1 control characters, DEL.
REPLACEMENT = "\ufffd"
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: An int with more digits than this is shown by its size, not its digits.
_MAX_DIGITS = 30


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """`repr(value)` for a message: cut to `limit` characters, made safe, never raising."""
    if type(value) is int and not -(10**_MAX_DIGITS) < value < 10**_MAX_DIGITS:
        return f"an int of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:  # a __repr__ that raises, an int too long to print
        return f"<{_type_name(value)} that cannot be shown>"
    if type(text) is not str:  # a __repr__ that returned a str subclass
        text = str.__str__(text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return safe_text(text)


def said(exc: BaseException, limit: int = 200) -> str:
    """What `exc` says, for a message: its str, cut and made safe, never raising."""
    try:
        text = str(exc) or type(exc).__name__
    except Exception:
        text = type(exc).__name__
    return safe_label(text, limit)


def _type_name(value: object) -> str:
    try:
        return type(value).__name__
    except Exception:  # pragma: no cover - every type has a name; a metaclass may lie
        return "object"


def safe_text(value: str) -> str:
    """`value` as an exact `str` that every exporter can encode: lone surrogates and control
    characters replaced by U+FFFD. Valid text comes back as it is, and fast."""
    if type(value) is not str:  # a subclass may override __hash__, __eq__, __str__
        value = str.__str__(value)
    if is_safe(value):  # the common case: nothing to replace
        return value
    return _UNSAFE.sub(REPLACEMENT, value)


def is_safe(value: object) -> bool:
    """Whether `value` is an exact str of printable ASCII: safe anywhere, as it is (a quick
    look that passes almost all text; what fails it goes through `safe_text`)."""
    return type(value) is str and value.isascii() and value.isprintable()


def safe_label(value: str, limit: int) -> str:
    """`value` made safe (`safe_text`) and cut to at most `limit` characters."""
    if type(value) is not str:
        value = str.__str__(value)
    return safe_text(value if len(value) <= limit else value[:limit])
