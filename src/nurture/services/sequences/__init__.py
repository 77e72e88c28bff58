"""Sequences: enrol, exit, cancel and re-plan inside the event's transaction; run each step as a
``sequence_step`` job that re-checks everything and sends through the delivery service.

Every change to an enrollment and its jobs goes through the ``Connection`` it is given, so it
commits with the event (or the API call) that caused it, or not at all. A step's job is keyed
``seq:{enrollment_id}:{step_id}``; that key is also the message key, so retries, replays and
several workers send a step at most once (the delivery service's claim).

- ``enrollment``: ``SequenceService``: enrol (plan every step and its job), end, complete;
- ``reschedule``: cancel and reschedule (tombstones, re-anchoring, re-planning);
- ``processing``: ``SequencesStep``, what an event does to enrollments;
- ``runner``: ``StepRunner``, the ``sequence_step`` job handler;
- ``admin``: manual enrolment and exit (API), ``nurture check``;
- ``sinks`` and ``common``: where notes go; keys, anchors and what ``enroll`` returns.
"""

from nurture.services.sequences.admin import check_automation, enroll_contact, exit_enrollment
from nurture.services.sequences.common import KIND, Enrolment, parse_anchor, step_key
from nurture.services.sequences.enrollment import SequenceService
from nurture.services.sequences.processing import SequencesStep, build_sequences_step
from nurture.services.sequences.runner import StepRunner, register
from nurture.services.sequences.sinks import ContextSink, DirectSink, Sink

__all__ = [
    "KIND",
    "ContextSink",
    "DirectSink",
    "Enrolment",
    "SequenceService",
    "SequencesStep",
    "Sink",
    "StepRunner",
    "build_sequences_step",
    "check_automation",
    "enroll_contact",
    "exit_enrollment",
    "parse_anchor",
    "register",
    "step_key",
]
