"""Rules as configuration: the ``rules`` and ``segments`` sections as typed models (``models``),
compiled once (``book``, ``expr``: CEL), and the pure ``decide()`` and segment assignment.

No I/O beyond reading the automation folder, no clock, no database: ``automation`` runs these
against events. May import ``analytics``, ``core``, ``pack`` and ``errors``.
"""
