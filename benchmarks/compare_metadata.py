"""Compare the DICOM JSON the server rebuilds from the index with pydicom's, file by file.

    python benchmarks/compare_metadata.py [ROOT] [--db DB]

ROOT defaults to $INDEXER_CORPUS. The files are indexed into DB (default: a new SQLite file
in a temporary folder), then for every file that the index holds (status indexed or partial)
and that pydicom reads, `indexer.reports.dicom_json` (what WADO-RS metadata serves, values cut
at the value limit read from the file as the server does) is compared with
``pydicom.dcmread(path).to_json_dict(bulk_data_threshold=0, ...)``, both naming every binary
value with the same BulkDataURI. Elements are counted at every depth (an item's elements
too); differences are sorted into classes, each with a count and a first location (file and
tag path, never a value). Prints files compared, elements equal and the classes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import select

from indexer.db import connect
from indexer.reports.dicom_json import datasets_of_rows, element_rows, read_cut_values
from indexer.rows import disk_path
from indexer.run import index_paths
from indexer.schema import files


def same_uri(_path: str) -> str:
    return "bulk"


def pydicom_json(path: str) -> dict[str, Any]:
    """pydicom's DICOM JSON of the file, every binary value a BulkDataURI. Without
    suppress_invalid_tags first: that option also turns on strict reading, which drops
    elements pydicom reads fine otherwise; with it only when the plain call fails."""
    dataset = pydicom.dcmread(path, force=True)
    options: dict[str, Any] = {"bulk_data_threshold": 0, "bulk_data_element_handler": same_uri}
    try:
        return dataset.to_json_dict(**options)
    except Exception:
        return pydicom.dcmread(path, force=True).to_json_dict(suppress_invalid_tags=True, **options)


def compare(
    ours: dict[str, Any],
    theirs: dict[str, Any],
    where: str,
    out: Counter[str],
    first: dict[str, str],
) -> int:
    """Elements equal at every depth; differences counted in `out` by class."""
    equal = 0
    for key in sorted(set(ours) | set(theirs)):
        here = f"{where}.{key}" if where else key
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None:
            cls = f"only in {'the index' if b is None else 'pydicom'} ({(a or b)['vr']})"
        elif a.get("vr") != b.get("vr"):
            cls = f"VR differs ({a.get('vr')} / {b.get('vr')})"
        elif a["vr"] == "SQ" and len(a.get("Value", [])) == len(b.get("Value", [])):
            equal += 1
            for i, (x, y) in enumerate(zip(a["Value"], b["Value"], strict=True)):
                equal += compare(x, y, f"{here}[{i}]", out, first)
            continue
        elif a == b:
            equal += 1
            continue
        else:
            cls = f"value differs ({a['vr']})"
        out[cls] += 1
        first.setdefault(cls, here)
    return equal


@dataclass
class Comparison:
    compared: int = 0
    unreadable: int = 0
    equal: int = 0
    cut_read: int = 0
    classes: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)
    differing_files: set[str] = field(default_factory=set)  # relative paths

    @property
    def total(self) -> int:
        return self.equal + sum(self.classes.values())


def compare_index(db: str, root: str) -> Comparison:
    """Compare every file of the index `db` under `root` that pydicom reads (see module doc)."""
    result = Comparison()
    with connect(db) as conn:
        stored = {
            fid: path
            for fid, path in conn.execute(
                select(files.c.id, files.c.path).where(files.c.status.in_(("indexed", "partial")))
            )
        }
        rows = element_rows(conn, sorted(stored))
        for fid, ours, cut in datasets_of_rows(rows, lambda _fid: same_uri):
            path = disk_path(stored[fid])
            try:
                theirs = pydicom_json(path)
            except Exception:
                result.unreadable += 1
                continue
            if cut:
                result.cut_read += read_cut_values(path, ours, cut)
            result.compared += 1
            where = os.path.relpath(path, root)
            # Files damaged on purpose: pydicom and the walker stop or recover differently.
            label = "[broken/] " if where.startswith("broken") else ""
            classes: Counter[str] = Counter()
            first: dict[str, str] = {}
            result.equal += compare(ours, theirs, where, classes, first)
            for cls, n in classes.items():
                result.classes[label + cls] += n
                result.first.setdefault(label + cls, first[cls])
            if classes:
                result.differing_files.add(where)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=os.environ.get("INDEXER_CORPUS"))
    parser.add_argument(
        "--db", help="index to build or bring up to date (default: a temporary SQLite file)"
    )
    args = parser.parse_args()
    if not args.root:
        parser.error("give ROOT or set INDEXER_CORPUS")
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as scratch:
        db = args.db or str(Path(scratch) / "index.db")
        index_paths([args.root], db=db, workers=1)
        r = compare_index(db, args.root)
    print(f"files compared: {r.compared} (pydicom could not read {r.unreadable} more)")
    print(f"elements equal: {r.equal} of {r.total} ({100.0 * r.equal / max(r.total, 1):.3f}%)")
    print(f"values cut at the value limit, read from the file: {r.cut_read}")
    for cls, n in sorted(r.classes.items(), key=lambda c: (c[0].startswith("[broken/]"), -c[1])):
        print(f"  {n:6d}  {cls}   e.g. {r.first[cls]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
