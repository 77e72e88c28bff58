"""Automation: the rules step (segments, ``decide()``, immediate effects, jobs, the lead score
and derived events), delayed rule actions, and scheduled (cron) rules.

The rules themselves are configuration compiled by the pure ``nurture.rules``; this package
runs them against events. May import ``intake``, ``contacts``, ``jobs``, ``storage`` and the
pure layers.
"""
