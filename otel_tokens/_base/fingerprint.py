"""A keyed fingerprint of an API key: stable per deployment, useless without the secret."""

from __future__ import annotations

import hashlib
import hmac

#: Environment variable that holds the per-deployment secret, read when a tracker is set up.
SECRET_ENV = "OTEL_TOKENS_API_KEY_SECRET"
_MIN_SECRET_BYTES = 16
_DIGEST_BYTES = 8  # 64 bits: no collision in practice for the keys one gateway sees
_CHECK_INPUT = b"otel_tokens: which secret is this?"


class KeyFingerprinter:
    """Turn an API key into a short HMAC-SHA256 fingerprint.

    A plain hash of a key can be brute-forced or matched across deployments; a keyed one
    cannot, so the fingerprint can be a metric label or a ledger column while the key
    itself never leaves the process.

    Raises:
        ValueError: a secret shorter than 16 bytes.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes | str) -> None:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(raw) < _MIN_SECRET_BYTES:
            msg = (
                f"the API key fingerprint secret must be at least {_MIN_SECRET_BYTES} bytes, "
                f"got {len(raw)}: set {SECRET_ENV} to a long random string"
            )
            raise ValueError(msg)
        self._secret = raw

    def __repr__(self) -> str:
        return "KeyFingerprinter(secret=<hidden>)"

    def __call__(self, api_key: str) -> str:
        """The fingerprint of `api_key`: 16 hex characters."""
        key = api_key.encode("utf-8", "surrogatepass")  # a header may hold anything
        return hmac.digest(self._secret, key, hashlib.sha256)[:_DIGEST_BYTES].hex()

    @property
    def check(self) -> str:
        """A value that tells two secrets apart without telling either: what a ledger
        keeps to know which secret its key ids were made with."""
        return hmac.digest(self._secret, _CHECK_INPUT, hashlib.sha256)[:16].hex()

    def same_secret(self, other: KeyFingerprinter) -> bool:
        """Whether `other` makes the same fingerprints."""
        return hmac.compare_digest(self._secret, other._secret)
