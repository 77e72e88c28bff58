"""People who use the console: accounts, password hashes, sessions and login throttling.

Imports storage, core and errors only; the web console and the CLI call it.
"""
