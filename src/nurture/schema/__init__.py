"""The database's shape: tables (``tables``), the column types both engines share (``types``)
and its history (``migrations``, Alembic). Imports only SQLAlchemy; ``storage`` holds every
query against these tables.
"""
