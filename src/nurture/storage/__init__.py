"""Every query: one module per aggregate, one function per named operation, each taking a
``Connection``; the engine, its group commit and wake-ups. With ``schema`` (the tables), the
only packages that import SQLAlchemy, apart from the ``Connection`` type features pass on.
Imports ``schema`` and ``core``; knows no feature."""
