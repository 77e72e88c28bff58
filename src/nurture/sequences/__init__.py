"""Sequences: drip campaigns and meeting reminders (SPEC §7).

Owns the automation folder's ``sequences:`` section, step planning, and every change to
enrollments and their jobs. May import ``intake`` (the processing context), ``contacts``,
``automation`` (the rules step's markers), ``messaging`` (it sends through ``Delivery``),
``jobs``, ``storage`` and the pure layers; nothing outside the composition root imports it
except the web and CLI edges.

Every change to an enrollment and its jobs goes through the ``Connection`` it is given, so it
commits with the event (or the API call) that caused it, or not at all. A step's job is keyed
``seq:{enrollment_id}:{step_id}``; that key is also the message key, so retries, replays and
several workers send a step at most once (the delivery service's claim).

- ``models``: the ``sequences:`` section as typed models; ``plan``: step times (pure);
- ``enrollment``: ``SequenceService``: enrol (plan every step and its job), end, complete;
- ``reschedule``: cancel and reschedule (tombstones, re-anchoring, re-planning);
- ``processing``: ``SequencesStep``, what an event does to enrollments;
- ``runner``: ``StepRunner``, the ``sequence_step`` job handler;
- ``admin``: manual enrolment and exit (API), ``nurture check``;
- ``sinks`` and ``common``: where notes go; keys, anchors and what ``enroll`` returns.
"""

from nurture.sequences.admin import check_automation, enroll_contact, exit_enrollment
from nurture.sequences.common import KIND, Enrolment, parse_anchor, step_key
from nurture.sequences.enrollment import SequenceService
from nurture.sequences.models import Sequence, SequenceBook, SequenceSpec, Step, load, load_book
from nurture.sequences.plan import PlannedStep, StepTiming, Window, next_allowed, plan
from nurture.sequences.processing import SequencesStep, build_sequences_step
from nurture.sequences.runner import StepRunner, register
from nurture.sequences.sinks import ContextSink, DirectSink, Sink

__all__ = [
    "KIND",
    "ContextSink",
    "DirectSink",
    "Enrolment",
    "PlannedStep",
    "Sequence",
    "SequenceBook",
    "SequenceService",
    "SequenceSpec",
    "SequencesStep",
    "Sink",
    "Step",
    "StepRunner",
    "StepTiming",
    "Window",
    "build_sequences_step",
    "check_automation",
    "enroll_contact",
    "exit_enrollment",
    "load",
    "load_book",
    "next_allowed",
    "parse_anchor",
    "plan",
    "register",
    "step_key",
]
