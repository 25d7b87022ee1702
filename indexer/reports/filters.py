"""`find` filters: ``KEY=VALUE`` and ``KEY<=NUMBER`` arguments, and how numbers match.

Numeric VRs compare as numbers (``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``FROM-TO``);
dates and times take ``FROM-TO`` ranges (``>=``/``<=`` are ranges open at one end); a
comparison on any other VR is refused, since text has no order a user could rely on.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_
from sqlalchemy.sql.elements import ColumnElement

from ..errors import ReportError

NUMERIC_VRS = frozenset(("DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"))
RANGE_VRS = frozenset(("DA", "TM", "DT"))
OPERATORS = ("<=", ">=", "!=", "<", ">", "=")

# The key stops at the first operator character: keys never contain one.
_FILTER = re.compile(r"\s*([^<>!=]+?)\s*(<=|>=|!=|<|>|=)(.*)\Z", re.DOTALL)
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_ONE_NUMBER = re.compile(rf"\s*({_NUMBER})\s*\Z")
_NUMBER_RANGE = re.compile(rf"\s*({_NUMBER})?\s*-\s*({_NUMBER})?\s*\Z")


@dataclass(frozen=True)
class Filter:
    key: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


def parse_filters(items: Iterable[str]) -> list[Filter]:
    """Split ``KEY=VALUE`` / ``KEY<=VALUE``... arguments. ReportError for one without operator."""
    parsed = []
    for position, item in enumerate(items, 1):
        m = _FILTER.match(item)
        if m is None:  # not echoed: an argument with no operator may be a value, e.g. a name
            raise ReportError(
                f"filter {position} is not KEY=VALUE or KEY<=NUMBER, "
                "e.g. StudyDate=20240101-20241231"
            )
        parsed.append(Filter(m.group(1), m.group(2), m.group(3)))
    return parsed


def as_filters(filters: Iterable[tuple[str, str] | tuple[str, str, str] | Filter]) -> list[Filter]:
    """Filters given as Filter, (key, value) (``=``) or (key, op, value)."""
    out = []
    for f in filters:
        if isinstance(f, Filter):
            out.append(f)
        elif len(f) == 2:
            out.append(Filter(f[0].strip(), "=", f[1]))
        else:
            if f[1] not in OPERATORS:
                raise ReportError(f"filter {f[0]}: unknown comparison {f[1]!r}")
            out.append(Filter(f[0].strip(), f[1], f[2]))
    return out


def date_range(f: Filter, vr: str | None) -> str:
    """The ``FROM-TO`` value of a date or time filter; ReportError for a comparison that has none,
    and for a comparison on a VR that is neither a number nor a date or time."""
    if f.op == "=" and vr in RANGE_VRS and f.value.strip() == "-":
        # An open range at both ends: refused on every key alike (it matched any value on
        # element rows, while the instance columns refused it).
        raise ReportError(f"filter {f.key}=-: give a start, an end or both, e.g. 20240101-20241231")
    if f.op == "=":
        return f.value
    if vr in RANGE_VRS:
        if f.op == ">=":
            return f"{f.value.strip()}-"
        if f.op == "<=":
            return f"-{f.value.strip()}"
        raise ReportError(
            f"filter {f.key}{f.op}: a {vr} takes =, >=, <= or a range FROM-TO "
            f"(e.g. {f.key}=20240101-20241231), not {f.op}"
        )
    raise ReportError(
        f"filter {f.key}{f.op}: {f.key} is {vr or 'text'}, not a number, date or time; "
        f"only = applies (with * and ? wildcards)"
    )


def is_numeric_test(f: Filter, vr: str | None) -> bool:
    """Whether `f` compares numbers: a numeric VR, and a comparison or a value with no wildcard."""
    if vr not in NUMERIC_VRS:
        return False
    return f.op != "=" or not ("*" in f.value or "?" in f.value)


@dataclass(frozen=True)
class NumberTest:
    """A numeric test: `low`/`high` bounds (None: open), inclusive or not; `equal`: one of
    these numbers; `negate`: != (none of the values equals)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    equal: tuple[float, ...] = ()
    negate: bool = False

    def __call__(self, x: float) -> bool:
        if self.equal:
            return (x not in self.equal) if self.negate else (x in self.equal)
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return not (self.high is not None and (x >= self.high if self.high_open else x > self.high))


def number_test(f: Filter, vr: str) -> NumberTest:
    """The NumberTest of a numeric filter; ReportError when its value is not a number.

    FL values are stored as the double of a 4-byte float (0.1 is 0.10000000149...), so the
    numbers typed are rounded the same way before they are compared."""
    value = f.value.strip()
    one = _ONE_NUMBER.match(value)
    if f.op == "=" and one is None and "\\" in value:
        parts = [p for p in value.split("\\") if p.strip()]
        if parts and all(_ONE_NUMBER.match(p) for p in parts):
            return NumberTest(equal=tuple(_typed(float(p), vr) for p in parts))
    if f.op in ("=", "!=") and one is not None:
        return NumberTest(equal=(_typed(float(one.group(1)), vr),), negate=f.op == "!=")
    if f.op == "=" and (m := _NUMBER_RANGE.match(value)) and (m.group(1) or m.group(2)):
        low = _typed(float(m.group(1)), vr) if m.group(1) else None
        high = _typed(float(m.group(2)), vr) if m.group(2) else None
        return NumberTest(low=low, high=high)  # a reversed range matches nothing: see hints
    if f.op in ("<", "<=", ">", ">=") and one is not None:
        x = _typed(float(one.group(1)), vr)
        if f.op[0] == "<":
            return NumberTest(high=x, high_open=f.op == "<")
        return NumberTest(low=x, low_open=f.op == ">")
    raise ReportError(
        f"filter {f.key}{f.op}: {f.key} is a number ({vr}); give a number, a range FROM-TO "
        f"(e.g. {f.key}=0-1.5) or a comparison such as {f.key}<=1.5"
    )


def number_condition(column: Any, test: NumberTest) -> ColumnElement[bool]:
    """`test` in SQL on a column of numbers."""
    if test.equal:
        return column.not_in(test.equal) if test.negate else column.in_(test.equal)  # type: ignore[no-any-return]
    conditions = []
    if test.low is not None:
        conditions.append(column > test.low if test.low_open else column >= test.low)
    if test.high is not None:
        conditions.append(column < test.high if test.high_open else column <= test.high)
    return and_(*conditions)


def _typed(x: float, vr: str) -> float:
    if vr == "FL":
        return float(struct.unpack("f", struct.pack("f", x))[0])
    return x


def values_matcher(test: NumberTest) -> Callable[[str | None, bool], bool]:
    """Whether the text of a multi-valued element matches: any of its values does (the DICOM
    habit); for != none of them equals. `cut`: the text was cut at the value limit, so its
    last value is not trusted."""

    def matches(text: str | None, cut: bool) -> bool:
        if not text:
            return False
        parts = text.split("\\")
        if cut:
            parts = parts[:-1]
        numbers = []
        for part in parts:
            try:
                numbers.append(float(part))
            except ValueError:
                continue
        if test.negate:
            return bool(numbers) and all(test(x) for x in numbers)
        return any(test(x) for x in numbers)

    return matches
