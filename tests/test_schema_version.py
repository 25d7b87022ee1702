"""The schema version the package expects is the newest migration it ships."""

from alembic.script import ScriptDirectory

from indexer import db


def test_head_revision_constant_is_the_newest_migration() -> None:
    scripts = ScriptDirectory.from_config(db.alembic_config())
    assert scripts.get_current_head() == db.HEAD_REVISION
    assert db.HEAD_REVISION in db.known_revisions()
