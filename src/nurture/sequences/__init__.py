"""Sequences: drip campaigns and meeting reminders (SPEC §7).

``models`` reads the automation folder's ``sequences:`` section; ``plan`` computes step times
(pure); ``nurture.services.sequences`` enrols, exits, cancels and re-plans inside the event's
transaction and runs each step as a ``sequence_step`` job.
"""

from nurture.sequences.models import Sequence, SequenceBook, SequenceSpec, Step, load, load_book
from nurture.sequences.plan import PlannedStep, StepTiming, Window, next_allowed, plan

__all__ = [
    "PlannedStep",
    "Sequence",
    "SequenceBook",
    "SequenceSpec",
    "Step",
    "StepTiming",
    "Window",
    "load",
    "load_book",
    "next_allowed",
    "plan",
]
