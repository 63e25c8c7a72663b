"""Which secret a ledger's key ids are made with, so that one API key always gets one id.

A key id is a keyed fingerprint of the key, so two secrets give one key two ids and a
per-key query finds part of its usage. The ledger therefore keeps, in its own database,
which secret its ids are made with: the check value of a secret it was given (never the
secret itself), or, when it was given none, a secret it made (in a file only its owner can
read, or a table no other role may read), so that per-key usage works with no setting at
all and stays the same across restarts and across replicas sharing one database. A
tracker that feeds the ledger uses the ledger's fingerprinter; a different secret on
either side is a setup error.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable

from otel_tokens._base.fingerprint import SECRET_ENV, KeyFingerprinter
from otel_tokens._base.warn import logger
from otel_tokens._ledger.store import Store

#: The setting that says which secret the key ids are made with: {"check": ...}, and
#: {"secret": hex} as well when the ledger made the secret itself.
_SETTING = "api_key_secret"


def _other_secret(target: str, given: str, fix: str) -> str:
    return (
        f"the ledger {target!r} holds key ids made with another API key fingerprint secret "
        f"than the one {given}, so one API key would get two ids: {fix}"
    )


class LedgerKeys:
    """The fingerprinter of one ledger's API keys: the secret configured, else the one the
    ledger keeps (made when first needed).

    Args:
        store: the ledger's database, as the ledger has it now (a forked child opens its
            own, and must never use its parent's).
        configured: a fingerprinter of the secret the ledger was given, if any.
        target: the ledger, for messages.

    Raises:
        ValueError: the ledger's key ids were made with a secret other than `configured`.
    """

    def __init__(
        self, store: Callable[[], Store], configured: KeyFingerprinter | None, target: str
    ) -> None:
        self._store = store
        self._target = target
        self._lock = threading.Lock()
        stored = self._read()
        if configured is not None:
            if stored is None:
                stored = self._put({"check": configured.check})
            if stored["check"] != configured.check:
                given = f"given ({SECRET_ENV} or api_key_secret=)"
                fix = "use the secret it was written with, or another ledger"
                raise ValueError(_other_secret(target, given, fix))
            self.fingerprint: KeyFingerprinter | None = configured
        else:
            self.fingerprint = _kept(stored)
        self._check = None if stored is None else stored["check"]

    def _read(self) -> dict[str, str] | None:
        raw = self._store().setting(_SETTING)
        return None if raw is None else _parsed(raw, self._target)

    def _put(self, value: dict[str, str]) -> dict[str, str]:
        """Store `value` unless another process stored one first; the value stored."""
        return _parsed(self._store().put_setting(_SETTING, json.dumps(value)), self._target)

    def after_fork(self) -> None:
        """A fresh lock in a forked child (one held by a parent thread is held for good)."""
        self._lock = threading.Lock()

    @property
    def check(self) -> str | None:
        """The check value of the secret the key ids are made with, once there is one."""
        return self._check

    def accept(self, check: str | None, source: str) -> None:
        """Take key ids made with the secret whose check is `check` (a snapshot's).

        Raises:
            ValueError: this ledger's key ids are made with another secret.
        """
        if check is None:
            return
        with self._lock:
            if self._check is None:
                self._check = self._put({"check": check})["check"]
        if self._check != check:
            msg = (
                f"{source} holds key ids made with another API key fingerprint secret than "
                f"the ledger {self._target!r}, so one API key would get two ids: merge it "
                "into a ledger made with its secret"
            )
            raise ValueError(msg)

    def get(self) -> KeyFingerprinter | None:
        """The fingerprinter, made and stored now if the ledger has none; None only when
        its key ids were made with a secret this process was not given."""
        if self.fingerprint is not None or self._check is not None:
            return self.fingerprint
        with self._lock:
            if self.fingerprint is None and self._check is None:
                made = secrets.token_bytes(32)
                stored = self._put({"check": KeyFingerprinter(made).check, "secret": made.hex()})
                # The fingerprinter before the check: get()'s unlocked look reads them in turn.
                self.fingerprint = _kept(stored)  # maybe another replica's
                self._check = stored["check"]
        return self.fingerprint

    def share(self, theirs: KeyFingerprinter | None) -> KeyFingerprinter | None:
        """The one fingerprinter for a tracker that feeds this ledger and for the ledger:
        the tracker's own (`theirs`, when it was given a secret) if the ledger had none,
        else the ledger's.

        Raises:
            ValueError: `theirs` makes other ids than the ledger's key ids are made with.
        """
        if theirs is None:
            found = self.get()
            if found is None:
                logger.warning(
                    "otel_tokens: the ledger %r holds key ids made with a secret this process "
                    "was not given, so requests are stored without their key: set %s",
                    self._target,
                    SECRET_ENV,
                )
            return found
        with self._lock:
            if self.fingerprint is None:
                check = self._check if self._check is not None else (
                    self._put({"check": theirs.check})["check"]
                )  # fmt: skip
                if check == theirs.check:
                    self.fingerprint = theirs  # before the check, as in get()
                self._check = check
            if self.fingerprint is None or not self.fingerprint.same_secret(theirs):
                fix = "give the tracker the ledger's secret, or none to use the ledger's"
                raise ValueError(_other_secret(self._target, "the TokenTracker was given", fix))
            return self.fingerprint


def _kept(stored: dict[str, str] | None) -> KeyFingerprinter | None:
    """The fingerprinter of the secret the ledger made and keeps, if it did."""
    if stored is None or "secret" not in stored:
        return None
    return KeyFingerprinter(bytes.fromhex(stored["secret"]))


def _parsed(raw: str, target: str) -> dict[str, str]:
    try:
        value = json.loads(raw)
        if isinstance(value, dict) and isinstance(value.get("check"), str):
            return value
    except ValueError:
        pass
    msg = f"the ledger {target!r} has a damaged {_SETTING!r} setting: restore it from a backup"
    raise ValueError(msg)
