"""Packing the next request of a session from what changed since the one before, instead of parsing, encoding and
hashing all of it again. Pure functions, no I/O.

A Claude Code turn is the previous turn's bytes with a little changed: the newest messages (and the message the
cache marker left), the billing header in system[0]. The previous request's `Layout` says where each of its parts
was; walking them in order, each part whose bytes are found again in the new request (at the same distance from
the one before it, or, after a change, by searching for it) joins a run. Each run is replaced by a placeholder
string no client can know, and only what is left is parsed. A placeholder found back as an element of its list,
or as the field's whole value, proves the run's parts stood there: they are reused with their hashes. Anything
else gives None, and the caller packs the whole body.
"""

from __future__ import annotations

import itertools
import secrets
from bisect import bisect_right
from dataclasses import dataclass, field

from ccany_addon.flowlog.parts import (
    Field,
    Layout,
    Packed,
    assemble,
    cache_keys,
    checked,
    encode_field,
    encoded,
    part_hash,
)
from ccany_addon.util.json_codec import dumps, loads

SEARCHES = 16  # parts looked for after a change, per request: a request that is not a follow-up costs little
_SEARCHABLE = 64  # bytes: a shorter part is too common to look for
_WORTH = 256  # bytes: a shorter run is parsed again rather than replaced
_STEP = 65536  # bytes compared at a time while looking for the first difference
# Placeholders no client can know: a secret drawn once per process (a random draw per run cost 8% of the writer's
# time), numbered.
_SECRET = secrets.token_hex(16)
_NUMBERS = itertools.count()


@dataclass(slots=True)
class _Run:
    """Consecutive items of one field of the previous request, found unchanged and adjacent in the new one."""

    field: int  # index in the previous layout
    first: int  # index of its first item
    last: int  # one past its last item
    start: int  # where its bytes are in the new request
    end: int
    placeholder: str = field(default_factory=lambda: f"ccany-run-{_SECRET}-{next(_NUMBERS)}")


def pack_after(previous: Layout, raw: bytes) -> Packed | None:
    """`raw` packed by reusing the parts it shares with `previous` (None: pack it whole)."""
    runs = [run for run in _runs(previous, raw) if run.end - run.start >= _WORTH]
    if not runs:
        return None
    pieces, at = [], 0
    for run in runs:
        pieces += [raw[at:run.start], dumps(run.placeholder)]
        at = run.end
    pieces.append(raw[at:])
    try:
        rest = loads(b"".join(pieces))
    except ValueError:
        return None
    if not isinstance(rest, dict):
        return None
    positions = {item.name: index for index, item in enumerate(previous.fields)}
    fields, verified = [], 0
    for name, value in rest.items():
        index = positions.get(name)
        mine = [run for run in runs if run.field == index]
        item = _reused(previous.fields[index], value, mine) if mine and index is not None else encode_field(name, value)
        if item is None:
            return None
        fields.append(item)
        verified += len(mine)
    return checked(assemble(fields, raw), raw) if verified == len(runs) else None


def _runs(previous: Layout, raw: bytes) -> list[_Run]:
    """The previous request's items found again in `raw`, in order, grouped into runs."""
    runs: list[_Run] = []
    shift = 0  # where the new request has the item, minus where the previous one had it
    cursor = 0  # the new request up to here is taken
    searches = 0
    for index, (item, starts) in enumerate(zip(previous.fields, previous.starts, strict=True)):
        number = 0
        while number < len(starts):
            # the items from here that are where they were (at this shift): found in a few comparisons
            found = _same_items(previous.raw, raw, item.data, starts, number, shift) \
                if starts[number] + shift >= cursor else number
            if found > number:
                end = starts[found - 1] + len(item.data[found - 1]) + shift
                runs.append(_Run(index, number, found, starts[number] + shift, end))
                cursor, number = end, found
                continue
            following = number + 1
            if following < len(starts) and starts[following] + shift >= cursor and \
                    raw.startswith(item.data[following], starts[following] + shift):
                number = following  # changed in place (the billing header): the next one is where it was
                continue
            data = item.data[number]  # changed or moved: look for it further on
            if searches < SEARCHES and len(data) >= _SEARCHABLE:
                searches += 1
                at = raw.find(data, cursor)
                if at >= 0:
                    shift = at - starts[number]
                    continue
            number += 1
    return runs


def _same_items(old: bytes, new: bytes, data: list[bytes], starts: list[int], first: int, shift: int) -> int:
    """One past the last of a field's items, from `first`, that `new` has at `shift` from where `old` had them."""
    begin = starts[first]
    limit = min(starts[-1] + len(data[-1]), len(new) - shift) - begin
    # `startswith` a view of the old bytes compares in place: slicing both sides copied each step twice
    view = memoryview(old)
    same = 0
    while same < limit and new.startswith(view[begin + same:begin + min(same + _STEP, limit)], begin + shift + same):
        same = min(same + _STEP, limit)
    low, high = same, min(same + _STEP, limit)
    while low < high:  # the first `low` bytes are the same, the first difference is before `high`
        middle = (low + high + 1) // 2
        if new.startswith(view[begin + low:begin + middle], begin + shift + low):
            low = middle
        else:
            high = middle - 1
    return bisect_right(range(len(starts)), begin + low, lo=first,
                        key=lambda number: starts[number] + len(data[number]))


def _reused(item: Field, value: object, runs: list[_Run]) -> Field | None:
    """The field with its runs' items taken from the previous request, or None when a placeholder is not where a
    run of its field could have stood."""
    if not item.split:
        return item if len(runs) == 1 and value == runs[0].placeholder else None
    if not isinstance(value, list):
        return None
    by_placeholder = {run.placeholder: run for run in runs}
    data: list[bytes] = []
    hashes: list[str] = []
    keys: list[str] = []
    found = []
    new: list[object] = []

    def flush() -> None:
        fresh = list(map(encoded, new))
        digests = list(map(part_hash, fresh))
        data.extend(fresh)
        hashes.extend(digests)
        if item.keys:
            keys.extend(cache_keys(fresh, digests))
        new.clear()

    for element in value:
        run = by_placeholder.get(element) if isinstance(element, str) else None
        if run is None:
            new.append(element)
            continue
        flush()
        found.append(run)
        data.extend(item.data[run.first:run.last])
        hashes.extend(item.hashes[run.first:run.last])
        if item.keys:
            keys.extend(item.keys[run.first:run.last])
    flush()
    if found != runs:  # each run once, in the order its bytes came
        return None
    return Field(item.name, None, data, hashes, keys, True)
