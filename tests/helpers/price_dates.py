"""Date the bundled rows that carry the day LiteLLM's map was read by litellm's release history.

    python -m tests.helpers.price_dates fetch LITELLM_JSON MAPS
    python -m tests.helpers.price_dates date LITELLM_JSON MAPS [--write]

LITELLM_JSON is PyPI's JSON for litellm (https://pypi.org/pypi/litellm/json): every release
with its upload time. MAPS is a directory of `<version>.json` files, each the
`litellm/model_prices_and_context_window_backup.json` member of that release's wheel
(`<version>.none` when the wheel has no such member).

A row of otel_tokens/prices.json whose `effective` is `READ_ON` was made by
tests/helpers/bundled_prices.py from the LiteLLM key its `source` names. Its price (every
class and tier, converted by the package's importer as the generator converts it) is looked
for in earlier releases of litellm's main line: the releases in upload order that are newer
than every release before them. A patch to an older line, uploaded later, is not read: its
map is that line's, older than the main line's of the same day (litellm 1.103.5 of
2026-10-17 lists a Qwen3.8-Flash price that 1.104.0 had already changed).
`fetch` downloads the wheels it needs with `pip download --no-deps` (one release in
`SAMPLE_EVERY` along the line from `FIRST` to `LAST`, then bisection between the last
release at hand whose map does not list the price and the next one at hand, until they are
consecutive on the line), keeps the JSON member and deletes the wheel. `date` reads only
MAPS and LITELLM_JSON: a row whose price is listed by release F of the line and every
release at hand after it, and not by the line's release just before F, gets F's upload day
(UTC) as its `effective`. A row whose bracket is not resolved by the maps at hand keeps
`READ_ON` and is reported on stderr.

What this cannot see: a change and change back between two releases at hand after F, and
releases PyPI does not serve (none between 1.14.4 of 2023-12-14 and 1.53.1 of
2024-11-28): a price first seen right after such a gap says so in its note.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from packaging.version import Version

from otel_tokens._pricing.litellm import from_litellm
from tests.helpers.bundled_prices import READ_ON, TABLE

MEMBER = "litellm/model_prices_and_context_window_backup.json"
#: The first release of the main line looked at: litellm 1.0.0 (2023-11-14).
FIRST = Version("1.0.0")
#: The release the bundled rows were read from: the last one looked at.
LAST = Version("1.110.2")
SAMPLE_EVERY = 8
#: A stretch of the main line longer than this with no release is a gap in what PyPI serves.
GAP_DAYS = 60
_CLASSES = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning",
            "above_input_tokens")  # fmt: skip
_KEY = re.compile(r"\(([^()]+)\)$")


@dataclass(frozen=True)
class Release:
    version: Version
    uploaded: str  # ISO time of the release's first file on PyPI

    @property
    def day(self) -> str:
        return self.uploaded[:10]


def releases(pypi: dict[str, Any]) -> tuple[list[Release], list[Release]]:
    """(the main line, every final release from FIRST to LAST), each in upload order."""
    found: list[Release] = []
    for text, files in pypi["releases"].items():
        version = Version(text)
        wheels = [f for f in files if f["packagetype"] == "bdist_wheel" and not f.get("yanked")]
        if not wheels or version.is_prerelease or version.is_devrelease:
            continue
        if FIRST <= version <= LAST:
            found.append(Release(version, min(f["upload_time_iso_8601"] for f in files)))
    found.sort(key=lambda r: r.uploaded)
    line: list[Release] = []
    for release in found:
        if not line or release.version > line[-1].version:
            line.append(release)
    return line, found


def signature(key: str, model: str, entry: object) -> str | None:
    """The price of `entry` as the generator writes it (classes and tiers), or None."""
    if not isinstance(entry, dict):
        return None
    priced = entry
    if entry.get("mode") == "embedding" and entry.get("output_cost_per_token") is None:
        priced = {**entry, "output_cost_per_token": 0}  # as bundled_prices does
    made, _ = from_litellm({model: priced})
    return _shape(made) if made else None


def _shape(rows: Iterable[dict[str, Any]]) -> str:
    return json.dumps([{k: r[k] for k in _CLASSES if k in r} for r in rows], sort_keys=True)


@dataclass
class Wanted:
    """The read-day rows of one model: the LiteLLM key they came from and their price."""

    model: str
    key: str
    price: str


def wanted(table: dict[str, Any]) -> list[Wanted]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in table["prices"]:
        if row["effective"] == READ_ON:
            groups.setdefault(row["model"], []).append(row)
    found = []
    for model, rows in groups.items():
        keys = {_KEY.search(r["source"]).group(1) for r in rows}  # type: ignore[union-attr]
        if len(keys) != 1:
            raise ValueError(f"{model}: rows name more than one LiteLLM key: {sorted(keys)}")
        rows.sort(key=lambda r: r.get("above_input_tokens", 0))
        found.append(Wanted(model, keys.pop(), _shape(rows)))
    return found


class Maps:
    """The price signatures of the wanted keys in each release's map in a directory."""

    def __init__(self, where: Path, wants: list[Wanted]) -> None:
        self.where = where
        self.wants = wants
        self._read: dict[Version, dict[str, str | None]] = {}

    def has(self, version: Version) -> bool:
        return (self.where / f"{version}.json").exists() or (
            self.where / f"{version}.none"
        ).exists()

    def prices(self, version: Version) -> dict[str, str | None]:
        """model -> its price in `version`'s map under the wanted key (None: not there)."""
        if version not in self._read:
            path = self.where / f"{version}.json"
            data = json.loads(path.read_text("utf-8")) if path.exists() else {}
            self._read[version] = {
                w.model: signature(w.key, w.model, data.get(w.key)) for w in self.wants
            }
        return self._read[version]

    def listed(self, version: Version, want: Wanted) -> bool:
        return self.prices(version)[want.model] == want.price


def fetch_one(version: Version, where: Path) -> None:
    """Download `version`'s wheel, keep its price map as `<version>.json`, delete the wheel."""
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             f"litellm=={version}", "-d", tmp],
            check=True,
        )  # fmt: skip
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            if MEMBER in archive.namelist():
                (where / f"{version}.json").write_bytes(archive.read(MEMBER))
            else:
                (where / f"{version}.none").write_text("")


def fetch(versions: Iterable[Version], maps: Maps) -> None:
    needed = sorted({v for v in versions if not maps.has(v)})
    if needed:
        print(f"fetching {len(needed)}: {' '.join(map(str, needed))}", file=sys.stderr)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda v: fetch_one(v, maps.where), needed))


def bracket(line: list[Release], maps: Maps, want: Wanted) -> tuple[int, int] | None:
    """(the last index at hand whose map does not list the price, the next index at hand): the
    start of the run of releases that list it up to the last. None if every map at hand lists it.
    Raises LookupError if the last release's map does not list it."""
    known = [i for i, r in enumerate(line) if maps.has(r.version)]
    if not maps.listed(line[known[-1]].version, want):
        raise LookupError(want.model)
    without = [i for i in known if not maps.listed(line[i].version, want)]
    if not without:
        return None
    return without[-1], next(i for i in known if i > without[-1])


def listed_before(line: list[Release], maps: Maps, want: Wanted, before: int) -> bool:
    """Whether a map at hand older than index `before` lists the price (a run that ended)."""
    return any(maps.has(r.version) and maps.listed(r.version, want) for r in line[:before])


def search(pypi: dict[str, Any], where: Path) -> None:
    line, _ = releases(pypi)
    table = json.loads(TABLE.read_text("utf-8"))
    maps = Maps(where, wanted(table))
    sample = {line[i].version for i in range(0, len(line), SAMPLE_EVERY)} | {line[-1].version}
    fetch(sample, maps)
    while True:  # bisect each unresolved bracket, all brackets a round at a time
        mids = set()
        for want in maps.wants:
            found = bracket(line, maps, want)
            if found and found[1] - found[0] > 1:
                mids.add(line[(found[0] + found[1]) // 2].version)
        if not mids:
            break
        fetch(mids, maps)


def dated(pypi: dict[str, Any], where: Path, write: bool) -> int:
    line, _ = releases(pypi)
    table = json.loads(TABLE.read_text("utf-8"))
    maps = Maps(where, wanted(table))
    days: dict[str, tuple[str, str]] = {}  # model -> (effective, note)
    used: set[Version] = set()
    for want in maps.wants:
        try:
            found = bracket(line, maps, want)
        except LookupError:
            print(f"{want.model}: no map at hand lists its price", file=sys.stderr)
            continue
        if found is None:
            print(f"{want.model}: the oldest map at hand lists it already", file=sys.stderr)
            continue
        low, high = line[found[0]], line[found[1]]
        if found[1] - found[0] != 1:
            print(f"{want.model}: unresolved between {low.version} and {high.version}",
                  file=sys.stderr)  # fmt: skip
            continue
        first = high
        note = (
            f"effective: the upload day of litellm {first.version}, the first release whose "
            "price map lists this price (the provider's own start day was not found)"
        )
        if listed_before(line, maps, want, found[0]):
            note = (
                f"effective: the upload day of litellm {first.version}, the first release "
                f"whose price map lists this price again after {low.version}, which did not "
                "(older releases listed it too; the provider's own start day was not found)"
            )
        if _days_between(low.day, high.day) > GAP_DAYS:
            note += (
                f"; PyPI serves no litellm release between {low.version} ({low.day}) and "
                f"{high.version}, so the price may be older"
            )
        days[want.model] = (first.day, note)
        used |= {low.version, high.version}
    researched: dict[str, list[str]] = {}  # model -> the days of its rows dated before
    for row in table["prices"]:
        if row["effective"] != READ_ON:
            researched.setdefault(row["model"], []).append(row["effective"])
    changed = 0
    for row in table["prices"]:
        if row["effective"] == READ_ON and row["model"] in days:
            others = researched.get(row["model"], [])
            day, note = days[row["model"]]
            if any(e >= day for e in others):
                print(f"{row['model']}: {day} is not after its other rows {others}",
                      file=sys.stderr)  # fmt: skip
                continue
            row["effective"], row["note"] = day, note
            changed += 1
    left = sum(1 for r in table["prices"] if r["effective"] == READ_ON)
    print(f"{changed} rows dated, {left} rows keep {READ_ON}; maps read: "
          f"{' '.join(str(v) for v in sorted(used))}", file=sys.stderr)  # fmt: skip
    if write:
        TABLE.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return 0


def _days_between(low: str, high: str) -> int:
    return (date.fromisoformat(high) - date.fromisoformat(low)).days


def main(argv: list[str]) -> int:
    command, pypi_path, where = argv[0], Path(argv[1]), Path(argv[2])
    pypi = json.loads(pypi_path.read_text("utf-8"))
    where.mkdir(parents=True, exist_ok=True)
    if command == "fetch":
        search(pypi, where)
        return 0
    return dated(pypi, where, "--write" in argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
