"""Contacts: state kept about a person outside the rules: consent and suppression, booking
status, and re-deriving segments and scores after a change made outside an event.

May import ``intake`` (the processing context), ``jobs``, ``storage`` and the pure layers.
"""
