"""Hints for `find` filters that cannot match: one line each, naming keys, never values.

Checked on the filters alone (and, for codes, whether the index holds the value at all), so
the results are those the filters give; the hints only say why they may be empty.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from functools import cache

from ..dictionary import uid_names
from .filters import NUMERIC_VRS, Filter

# Modality (0008,0060): the defined terms of PS3.3 C.7.3.1.1.1, with the retired ones.
MODALITIES = frozenset(
    [
        "AR",
        "ASMT",
        "AU",
        "BDUS",
        "BI",
        "BMD",
        "CFM",
        "CT",
        "CTPROTOCOL",
        "DMS",
        "DG",
        "DOC",
        "DX",
        "ECG",
        "EEG",
        "EMG",
        "EOG",
        "EPS",
        "ES",
        "FID",
        "GM",
        "HC",
        "HD",
        "IO",
        "IOL",
        "IVOCT",
        "IVUS",
        "KER",
        "KO",
        "LEN",
        "LS",
        "MG",
        "MR",
        "M3D",
        "NM",
        "OAM",
        "OCT",
        "OP",
        "OPM",
        "OPT",
        "OPTBSV",
        "OPTENF",
        "OPV",
        "OSS",
        "OT",
        "PA",
        "PLAN",
        "POS",
        "PR",
        "PT",
        "PX",
        "REG",
        "RESP",
        "RF",
        "RG",
        "RTDOSE",
        "RTIMAGE",
        "RTINTENT",
        "RTPLAN",
        "RTRAD",
        "RTRECORD",
        "RTSEGANN",
        "RTSTRUCT",
        "RWV",
        "SEG",
        "SM",
        "SMR",
        "SR",
        "SRF",
        "STAIN",
        "TEXTUREMAP",
        "TG",
        "US",
        "VA",
        "XA",
        "XAPROTOCOL",
        "XC",
        "AS",
        "CD",
        "CF",
        "CP",
        "CS",
        "DD",
        "DF",
        "DM",
        "DS",
        "EC",
        "FA",
        "FS",
        "LP",
        "MA",
        "MS",
        "OPR",
        "ST",
        "VF",
    ]
)
_DATE = re.compile(r"\d{4}(\d{2}(\d{2})?)?\Z")  # YYYY, YYYYMM, YYYYMMDD
_TIME = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?\Z")  # HH, HHMM, HHMMSS.FFFFFF
_LOOKS_LIKE_A_LIST = re.compile(r"[A-Za-z0-9._ ^-]+(,[A-Za-z0-9._ ^-]+)+\Z")


def keyword_hint(key: str) -> str:
    """'; did you mean X?' for a keyword that is not in the dictionary, else ''."""
    if not key.isidentifier():
        return ""
    close = difflib.get_close_matches(key, _keywords(), n=1, cutoff=0.8)
    return f"; did you mean {close[0]}?" if close else ""


@cache
def _keywords() -> tuple[str, ...]:
    from ..dictionary import _public_tables

    return tuple(_public_tables()[1])


def value_hints(f: Filter, keyword: str, vr: str | None) -> list[str]:
    """Why `f` (on an attribute of dictionary VR `vr`) cannot match, one line each."""
    value = f.value.strip()
    if f.op != "=" or not value or "*" in value or "?" in value:
        return []
    if vr in ("DA", "TM"):
        return _date_hints(f, vr, value)
    if vr in NUMERIC_VRS or vr == "UI":
        return []  # numbers are parsed (an error when they are not); UIDs take "," lists
    if vr == "CS" and "\\" not in value and _LOOKS_LIKE_A_LIST.match(value):
        return [
            f"{f.key}: a comma is part of the value; separate several values with \\ "
            f"(e.g. {keyword}=CT\\MR, quoted in the shell)"
        ]
    return []


def _date_hints(f: Filter, vr: str, value: str) -> list[str]:
    shape, example = (_DATE, "YYYYMMDD, e.g. 20240131") if vr == "DA" else (_TIME, "HHMMSS")
    if "-" in value:
        low, _, high = (v.strip() for v in value.partition("-"))
        ends = [v for v in (low, high) if v]
    else:
        low = high = ""
        ends = [value]
    if vr == "DA" and re.fullmatch(r"\d{4}-\d{2}(-\d{2})?(-.*)?", value):
        return [f"{f.key}: a DA is written {example}, without dashes; a range is FROM-TO"]
    if not all(shape.match(v) for v in ends):
        return [f"{f.key}: a {vr} is written {example}; a range is FROM-TO"]
    if low and high and low[: len(high)] > high:
        return [f"{f.key}: the range is reversed (FROM is after TO): nothing can match"]
    if vr == "DA" and "-" not in value and len(value) < 8:
        return [f"{f.key}: one date is a whole YYYYMMDD; a year or month is a range: 2024-2024"]
    return []


def number_range_hint(f: Filter, low: float | None, high: float | None) -> list[str]:
    if low is not None and high is not None and low > high:
        return [f"{f.key}: the range is reversed (FROM is above TO): nothing can match"]
    return []


def modality_hint(f: Filter, stored: Callable[[list[str]], set[str]]) -> list[str]:
    """A Modality value that is no defined term and that no series of the index holds
    (`stored`: which of the given values the index holds)."""
    values = [v.strip() for v in f.value.split("\\") if v.strip()]
    if f.op != "=" or "," in f.value or any("*" in v or "?" in v for v in values):
        return []
    unknown = [v for v in values if v not in MODALITIES]
    if unknown:
        held = stored(unknown)
        unknown = [v for v in unknown if v not in held]
    if not unknown:
        return []
    return [
        f"{f.key}: {len(unknown)} value(s) are not Modality defined terms (PS3.3 C.7.3.1.1.1, "
        "e.g. CT, MR, US, SR) and no series has them"
    ]


def sop_class_hint(f: Filter, stored: Callable[[list[str]], set[str]]) -> list[str]:
    """SOP Class UIDs that are neither registered nor in the index."""
    uids = [u.strip() for u in re.split(r"[\\,]", f.value) if u.strip()]
    if f.op != "=" or not uids:
        return []
    unknown = [u for u in uids if uid_names(u) is None]
    if unknown:
        held = stored(unknown)
        unknown = [u for u in unknown if u not in held]
    if not unknown:
        return []
    return [
        f"{f.key}: {len(unknown)} UID(s) are not registered SOP classes and no instance has them"
    ]
