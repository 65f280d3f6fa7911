"""SQL written once for both engines, against a small :class:`~.dialect.Dialect`.

SQLite and PostgreSQL keep the same tables under the same names; they differ
in a handful of spellings (placeholders, how a time is stored, ``IS`` against
``IS NOT DISTINCT FROM``, where engagement counts live, how a URL's host is
read). Each engine declares those once in its dialect, and the statements
both run (accounts, watches, the people and post reads that are not an
engine's speciality) live here. What an engine does its own way (the ingest
transaction, full-text ranking, partitions) stays in its package.
"""

from townsquare.store.sql.dialect import Dialect, SqlTables

__all__ = ["Dialect", "SqlTables"]
