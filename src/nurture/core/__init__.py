"""Pure domain types: events, contacts, channel ports, retry policy, the scoring section.

No I/O, no clock, no environment. Imports only ``errors`` (and pydantic for the scoring
section); everything else may import it.
"""
