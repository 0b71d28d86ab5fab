"""Signing and verifying webhook payloads (standard library only, so receivers can copy or import it).

Header: `X-Zfarm-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + raw body>`. The timestamp
is inside the signed text, so a captured request cannot be replayed later than the receiver's tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Zfarm-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature header is missing, malformed, too old, or does not match the body."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The value of the X-Zfarm-Signature header for this body."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret, t, body)}"


def verify(
    secret: str, header: str | None, body: bytes, tolerance: float = DEFAULT_TOLERANCE_SECONDS, now: float | None = None
) -> None:
    """Raises SignatureError unless `header` is a valid signature of `body` made within `tolerance` seconds."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp, received = int(parts["t"]), parts["v1"]
    except (KeyError, ValueError) as exc:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: {header!r}") from exc
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise SignatureError(f"signature timestamp is {age:.0f} s away from now (tolerance {tolerance:.0f} s)")
    if not hmac.compare_digest(_digest(secret, timestamp, body), received):
        raise SignatureError("signature does not match the body")
