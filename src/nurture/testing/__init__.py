"""Fakes and builders shared by the tests, the benchmarks and ``simulate``.

Every port ships a fake here: clocks (``FixedClock``, ``VirtualClock``), the recording channels
(the e-mail, SMS and webhook ports; also what ``NURTURE_DRY_RUN`` sends through), and the
signed-request builders, which use the same ``sign`` functions as ``verify`` so tests exercise
the real verification path. ``Harness`` runs the app and a processor in one process.
"""

from nurture.clock import FixedClock, VirtualClock
from nurture.providers.recording import (
    RecordedPost,
    RecordingEmail,
    RecordingSms,
    RecordingWebhooks,
)
from nurture.testing.harness import Harness, harness
from nurture.testing.requests import (
    brevo_request,
    calcom_request,
    new_secret,
    resend_request,
    signed_json,
    standard_request,
    stripe_request,
)

__all__ = [
    "FixedClock",
    "Harness",
    "RecordedPost",
    "RecordingEmail",
    "RecordingSms",
    "RecordingWebhooks",
    "VirtualClock",
    "brevo_request",
    "calcom_request",
    "harness",
    "new_secret",
    "resend_request",
    "signed_json",
    "standard_request",
    "stripe_request",
]
