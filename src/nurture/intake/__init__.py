"""Intake: webhook deliveries become stored events, and the worker processes them in order.

Owns the group-commit ingest (``ingest``), the event processor and its batch (``process``,
``deferred``), contact resolution (``resolve``), what a processing step sees (``context``:
``Step``, ``ProcessingContext``) and what processing an event did (``results``). The lowest
feature: it may import ``storage``, ``jobs`` and the pure layers, never another feature.
"""
