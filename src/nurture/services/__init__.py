"""Use cases that own the transaction: ingest, process, and the feature services."""
