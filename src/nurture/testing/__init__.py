"""Fakes and builders shared by the tests, the benchmarks and ``simulate``.

Every port ships a fake here: clocks (``FixedClock``, ``VirtualClock``), the recording channels
(the e-mail, SMS and webhook ports; also what ``NURTURE_DRY_RUN`` sends through), fakes of the
third-party APIs at their HTTP boundary (``FakeBrevo``/``FakeResend`` for ``httpx.MockTransport``,
or behind a real socket with ``ProviderServer``,
``NotionFake`` and ``HookRecorder`` as real local servers through ``serve``), and the
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
from nurture.testing.notion import NotionFake
from nurture.testing.provider_apis import FakeBrevo, FakeResend
from nurture.testing.provider_server import ProviderServer
from nurture.testing.requests import (
    brevo_request,
    calcom_request,
    new_secret,
    resend_request,
    signed_json,
    standard_request,
    stripe_request,
)
from nurture.testing.servers import HookRecorder, Recorded, Scripted, free_port, serve, wait_for

__all__ = [
    "FakeBrevo",
    "FakeResend",
    "FixedClock",
    "Harness",
    "HookRecorder",
    "NotionFake",
    "ProviderServer",
    "Recorded",
    "RecordedPost",
    "RecordingEmail",
    "RecordingSms",
    "RecordingWebhooks",
    "Scripted",
    "VirtualClock",
    "brevo_request",
    "calcom_request",
    "free_port",
    "harness",
    "new_secret",
    "resend_request",
    "serve",
    "signed_json",
    "standard_request",
    "stripe_request",
    "wait_for",
]
