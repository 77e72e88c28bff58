"""The ``nurture`` command line (typer); the entry point is ``nurture.cli.main:main``.

Deliberately empty: importing a sub-command module (``nurture.cli.simulate``)
must not drag in ``main``, which imports every sub-command back (a cycle that
broke test collection when a test imported a sub-command first).
"""
