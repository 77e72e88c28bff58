"""The connection to the database: engines and the two kinds of transaction (``engine``), how
values are encoded for driver-level statements (``encode``), wake-ups between processes
(``notify``) and the migration runner (``migrate``).

Below ``storage`` (the named queries) and above ``schema`` (tables and migrations): it may import
``schema``, ``errors`` and the pure layers, never ``storage`` or anything above it.
"""
