"""Tables of the index. One MetaData with a naming convention, so both databases get the same names.

Layout, from the archive down:
  runs                      one row per `indexer index` run
  files                     every regular file met under the roots, with its status
  errors                    what went wrong, per file and run (path, stage, reason, message)
  patients/studies/series   the DICOM hierarchy, keyed by Patient ID + issuer and the UIDs
                            (no Patient ID: a synthetic patient per study)
  instances                 one row per DICOM file that was read (the file's data set)
  elements                  one row per data element or sequence item of each instance
  paths                     the distinct sequence paths that elements point at (a dictionary)
  encapsulated              fragment counts, sizes and offset tables of encapsulated values

Elements are the bulk of the database (hundreds per instance), so their rows are
kept narrow: the path text, tag, keyword and private creator live once in `paths`,
and the row holds a 64-bit path id derived from the path itself (a hash), which
every writer computes alike without asking the database.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Core tables on one MetaData (the naming convention gives both databases the same constraint
# names). Nothing is mapped to classes: the writer and the reports use Core only, and leaving
# out sqlalchemy.orm takes a tenth of a second off every command's start-up.
metadata = MetaData(naming_convention=NAMING_CONVENTION)

# A DICOMDIR: its File Meta names this class (Media Storage Directory Storage); its instance
# row's hierarchy_problem is DIRECTORY_PROBLEM.
DIRECTORY_CLASS = "1.2.840.10008.1.3.10"
DIRECTORY_PROBLEM = "DICOMDIR (a media directory, not an instance)"

# `conflicts` of patients, studies and series: the attributes on which two files of one row
# must not disagree. A difference sets the attribute's bit (1 << position). Spelling
# (names, descriptions) and values that legitimately vary (times, numbers of the
# instances) are not conflicts. "patient" is the study's Patient ID + issuer.
CONFLICTS = {
    "patients": ("birth_date", "sex"),
    "studies": ("patient", "study_date", "accession_number"),
    "series": ("modality", "series_number", "body_part"),
}


def conflict_names(table: str, bits: int) -> list[str]:
    """The attributes whose bits are set in `bits`, a `conflicts` value of `table`."""
    return [name for i, name in enumerate(CONFLICTS[table]) if bits >> i & 1]


runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("started_at", Float, nullable=False),  # Unix time
    Column("finished_at", Float),
    Column("roots", Text, nullable=False),  # JSON list of the paths given
    Column("options", Text, nullable=False),  # JSON object
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("outcome", Text, nullable=False),  # running, completed, interrupted, failed
    Column("files_seen", Integer, nullable=False, default=0),
    Column("files_indexed", Integer, nullable=False, default=0),
    Column("files_unchanged", Integer, nullable=False, default=0),
    Column("files_failed", Integer, nullable=False, default=0),
    Column("files_skipped", Integer, nullable=False, default=0),
    Column("files_missing", Integer, nullable=False, default=0),
    Column("elements_written", BigInteger, nullable=False, default=0),
)

files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    # indexed, partial (read up to a problem), not_dicom, error, missing
    Column("status", Text, nullable=False),
    Column("preamble", Boolean),
    Column("has_meta", Boolean),
    Column("transfer_syntax", Text),
    Column("explicit_vr", Boolean),
    Column("little_endian", Boolean),
    Column("deflated", Boolean),
    Column("element_count", Integer),
    Column("max_depth", Integer),
    Column("fragment_sequences", Integer),
    Column("fragments", Integer),
    Column("problem", Text),
    Column("first_run", Integer, nullable=False),
    Column("last_run", Integer, nullable=False),  # last run that saw the file
    Column("indexed_at", Float),
    UniqueConstraint("path"),
    Index(None, "status"),
)

errors = Table(
    "errors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("path", Text, nullable=False),
    Column("stage", Text, nullable=False),  # crawl, read, walk, write
    Column("reason", Text, nullable=False),  # not_dicom, truncated, invalid, unreadable, ...
    Column("message", Text, nullable=False),
    Column("severity", String(8), nullable=False),  # error, warning
    Column("at", Float, nullable=False),
    Index(None, "path"),
    Index(None, "run_id"),
)

patients = Table(
    "patients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_id", Text, nullable=False),  # "" when the files carry none
    Column("issuer", Text, nullable=False),
    # Files without a Patient ID get one made-up patient per study, keyed (and flagged) by the
    # StudyInstanceUID here: "" for a patient known by its Patient ID.
    Column("synthetic_study_uid", Text, nullable=False, server_default=""),
    Column("patient_name", Text),
    Column("birth_date", Text),
    Column("sex", Text),
    Column("conflicts", Integer, nullable=False, server_default="0"),  # see CONFLICTS
    UniqueConstraint("patient_id", "issuer", "synthetic_study_uid"),
)

studies = Table(
    "studies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study_uid", Text, nullable=False),
    Column("patient_ref", Integer, ForeignKey("patients.id"), nullable=False),
    Column("study_date", Text),
    Column("study_time", Text),
    Column("accession_number", Text),
    Column("study_id", Text),
    Column("description", Text),
    Column("referring_physician", Text),
    # bits of the attributes on which the study's files disagree (CONFLICTS)
    Column("conflicts", Integer, nullable=False, server_default="0"),
    UniqueConstraint("study_uid"),
    Index(None, "patient_ref"),
    Index(None, "study_date"),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("series_uid", Text, nullable=False),
    Column("study_ref", Integer, ForeignKey("studies.id"), nullable=False),
    Column("modality", Text),
    Column("series_number", Integer),  # NULL unless one plain integer (rows.NUMBER_ATTRIBUTES)
    Column("description", Text),
    Column("body_part", Text),
    Column("manufacturer", Text),
    Column("model", Text),
    Column("series_date", Text),
    Column("conflicts", Integer, nullable=False, server_default="0"),  # as studies.conflicts
    UniqueConstraint("series_uid"),
    Index(None, "study_ref"),
    Index(None, "modality"),
)

instances = Table(
    "instances",
    metadata,
    Column("file_id", Integer, ForeignKey("files.id"), primary_key=True, autoincrement=False),
    Column("series_ref", Integer, ForeignKey("series.id")),  # NULL when the hierarchy is broken
    Column("sop_instance_uid", Text),
    Column("sop_class_uid", Text),
    Column("modality", Text),
    Column("instance_number", Integer),  # as series.series_number
    Column("content_date", Text),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("frames", Integer),
    # the instance's own values (its series and study keep the smallest any file gave)
    Column("manufacturer", Text),
    Column("model", Text),
    Column("study_date", Text),
    Column("element_count", Integer, nullable=False),
    # why the instance is outside the hierarchy or shares its UID, e.g. "no StudyInstanceUID"
    Column("hierarchy_problem", Text),
    Index(None, "sop_instance_uid"),
    Index(None, "series_ref"),
    Index(None, "sop_class_uid"),
)

paths = Table(
    "paths",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # hash of (path, creator)
    Column("path", Text, nullable=False),  # "(0040,0275)[0].(0040,0008)[0].(0008,0100)"
    Column("location", Text, nullable=False),  # the path without item numbers
    Column("tag", BigInteger, nullable=False),
    Column("depth", Integer, nullable=False),
    Column("keyword", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("private_creator", Text),
    Index(None, "tag"),
    Index(None, "location"),
)

elements = Table(
    "elements",
    metadata,
    # No foreign key on file_id: the writer deletes an instance's rows itself, and PostgreSQL
    # would otherwise run a referential check for each of hundreds of millions of rows.
    Column("file_id", Integer, primary_key=True, autoincrement=False),
    Column("ordinal", Integer, primary_key=True, autoincrement=False),  # position in the file
    Column("path_id", BigInteger, nullable=False),
    Column("vr", String(2), nullable=False),
    Column("vm", Integer, nullable=False),
    Column("length", BigInteger, nullable=False),
    Column("value", Text),
    Column("number", Float),
    Column("flags", Integer, nullable=False),
    # Tag counts are answered from the summary tables the writer keeps (indexer/summaries/), a
    # file's rows by the primary key, and the rows of one tag (a search on any attribute) by
    # the path index. Kept up to date row by row that index would slow a large first run
    # (each batch touches thousands of its pages), so such a run drops it and builds it once
    # at the end (writer/path_index.py).
    Index("ix_elements_path_id", "path_id"),
    sqlite_with_rowid=False,
)

encapsulated = Table(
    "encapsulated",
    metadata,
    Column("file_id", Integer, primary_key=True, autoincrement=False),
    Column("ordinal", Integer, primary_key=True, autoincrement=False),
    Column("fragments", Integer, nullable=False),  # Basic Offset Table item not counted
    Column("fragment_bytes", BigInteger, nullable=False),
    Column("fragment_sizes", Text, nullable=False),  # comma-separated
    Column("offset_table", Text, nullable=False),  # comma-separated, "" when empty
    sqlite_with_rowid=False,
)

# -- summaries (indexer/summaries/): kept at write time for `indexer tags` ---------------------
#
# A "tag key" names a tag the way the reports count it: public tags by tag, private tags by
# group + private creator + the element's low byte (the block byte differs between files),
# nested tags by the keys of the sequences they sit in, without item numbers:
#   (0008,0060)    (0029,"SIEMENS CSA HEADER",10)    (0040,0275).(0040,0008).(0008,0100)
# Counts are split by usage group (modality + SOP class) so that `tags --modality` and
# `--sop-class` need no element rows. Rows whose counts fall to zero are deleted.

usage_groups = Table(
    "usage_groups",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # hash of "modality|sop class"
    Column("modality", Text, nullable=False),  # "" when the instance has none
    Column("sop_class_uid", Text, nullable=False),  # "" when the instance has none
)

tag_keys = Table(
    "tag_keys",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # hash of `key`
    Column("key", Text, nullable=False),
    Column("keywords", Text, nullable=False),  # the key with keywords where known: "Modality"
    # the last element's tag; private tags as if in block 10: 0xGGGG10EE, the creator 0xGGGG0010
    Column("tag", BigInteger, nullable=False),
    Column("depth", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("private_creator", Text),
    UniqueConstraint("key"),
)

path_keys = Table(
    "path_keys",
    metadata,
    # which paths (rows of `paths`) hold the elements counted under a key: for drill-downs
    Column("key_id", BigInteger, primary_key=True, autoincrement=False),
    Column("path_id", BigInteger, primary_key=True, autoincrement=False),
    Index(None, "path_id"),
    sqlite_with_rowid=False,
)

tag_usage = Table(
    "tag_usage",
    metadata,
    Column("key_id", BigInteger, primary_key=True, autoincrement=False),
    Column("group_id", BigInteger, primary_key=True, autoincrement=False),
    Column("instances", BigInteger, nullable=False),  # instances holding the tag at least once
    Column(
        "occurrences", BigInteger, nullable=False
    ),  # element rows (> instances inside sequences)
    Column("untracked", BigInteger, nullable=False),  # occurrences whose value is not in tag_values
    sqlite_with_rowid=False,
)

tag_values = Table(
    "tag_values",
    metadata,
    # short values of the VRs in summaries.TRACKED_VRS only: no UIDs, times or decimals
    Column("key_id", BigInteger, primary_key=True, autoincrement=False),
    Column("value", Text, primary_key=True),
    Column("group_id", BigInteger, primary_key=True, autoincrement=False),
    Column("instances", BigInteger, nullable=False),
    Column("occurrences", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

instance_groups = Table(
    "instance_groups",
    metadata,
    # instances per combination of what `indexer stats` breaks them down by
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # hash of the other columns
    Column("modality", Text),
    Column("sop_class_uid", Text),
    Column("manufacturer", Text),  # of the series
    Column("model", Text),
    Column("study_year", String(4)),  # first 4 characters of the study's StudyDate
    Column("in_hierarchy", Boolean, nullable=False),  # the instance has a series
    Column("instances", BigInteger, nullable=False),
    Column("elements", BigInteger, nullable=False),  # sum of instances.element_count
)


def _deltas_of(counters: Table) -> Table:
    """`counters`' columns, none of them a key, after a delta id: one writer's changes to it."""
    return Table(
        f"{counters.name}_deltas",
        metadata,
        Column("delta_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        *(Column(c.name, c.type, nullable=c.nullable) for c in counters.columns),
    )


# Counter deltas of the writers that run side by side on PostgreSQL (`--writers N`): each
# writer appends its transaction's changes here (inserts only, so writers never wait on one
# another's counter rows) and one merger folds them into tag_usage, tag_values and
# instance_groups (summaries.merge_pending). Empty whenever no merge is due.
tag_usage_deltas = _deltas_of(tag_usage)
tag_values_deltas = _deltas_of(tag_values)
instance_groups_deltas = _deltas_of(instance_groups)

# `indexer find` looks studies up by accession number, instances by their own study date, and
# the few instances outside the hierarchy or flagged (which a narrowed search must still read).
Index(None, studies.c.accession_number)
Index(None, instances.c.study_date)
Index(
    None,
    instances.c.hierarchy_problem,
    sqlite_where=instances.c.hierarchy_problem.is_not(None),
    postgresql_where=instances.c.hierarchy_problem.is_not(None),
)
# `indexer stats`: files by status and transfer syntax, the median element count, series by
# modality and by manufacturer, each read from an index alone.
Index(None, files.c.status, files.c.transfer_syntax, files.c.size)
Index(None, instances.c.element_count)
Index(None, series.c.modality, series.c.study_ref)
Index(None, series.c.manufacturer, series.c.model)

# Views for readers other than indexer (datasette, DuckDB, notebooks), created by migration
# 0005 with the same columns on both databases: element rows with their file, path, tag,
# keyword and VR; one row per instance with its patient, study and series; tag usage with
# its key and usage group. They are not tables of this MetaData (alembic compares tables).
VIEWS = ("element_details", "instance_details", "tag_usage_details")
