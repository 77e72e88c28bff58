"""Password hashing with Argon2id (argon2-cffi's RFC 9106 defaults); nothing else sees them."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()
MIN_LENGTH = 10
MAX_LENGTH = 1024


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash("nurture: no such user")


def verify(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists: an unknown name checks a dummy hash, so
    the answer's timing does not tell which names exist."""
    try:
        return _HASHER.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


def problem(password: str) -> str | None:
    """Why ``password`` is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    if password.strip() != password:
        return "must not start or end with spaces"
    return None
