"""Alembic migrations, one linear chain, written by hand with the types of ``schema.types``."""

from pathlib import Path

DIRECTORY = Path(__file__).parent
