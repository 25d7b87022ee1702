"""A short tag-usage report of an index, written against the library (no CLI).

    python examples/tag_report.py [DB [MODALITY]]

DB is a SQLite file or a database URL (default: $INDEXER_DB, else dicom-index.db).
Prints the size of the index, the instances per modality, the most common top-level
tags and the private creators found, each with the instances that hold them.
"""

from __future__ import annotations

import sys

from indexer.db import connect
from indexer.errors import IndexerError
from indexer.reports import collect_stats, tag_usage, tag_values_report


def main(argv: list[str]) -> int:
    db = argv[1] if len(argv) > 1 else None
    modality = argv[2] if len(argv) > 2 else None
    try:
        with connect(db) as conn:
            stats = collect_stats(conn)
            usage = tag_usage(conn, modality=modality, top=3)
            modalities = tag_values_report(conn, "Modality")
    except IndexerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    print(
        f"{stats['instances']} instances, {stats['series']} series, {stats['studies']} studies, "
        f"{stats['elements']} elements"
    )
    print("\ninstances per modality")
    for entry in modalities["values"]:
        print(f"  {entry['value'] or '(empty)':<10} {entry['instances']:>8}")

    scope = f" of {modality}" if modality else ""
    print(f"\nmost common top-level tags{scope} ({usage['instances']} instances)")
    top_level = [t for t in usage["tags"] if t["depth"] == 0]
    for tag in sorted(top_level, key=lambda t: (-t["instances"], t["tag"]))[:10]:
        share = 100 * tag["share"]
        print(f"  {tag['tag']}  {tag['keyword']:<32} {tag['instances']:>8}  {share:5.1f}%")

    print("\nprivate creators")
    creators = [t for t in top_level if t["private_creator"] and t["tag"].endswith('")')]
    for tag in sorted(creators, key=lambda t: (-t["instances"], t["tag"])):
        print(f"  {tag['tag']:<48} {tag['instances']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
