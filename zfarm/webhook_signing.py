"""Signing and verifying webhook payloads (standard library only, so receivers can copy or import it).

Webhooks follow Standard Webhooks (standardwebhooks.com), which libraries in many languages verify:
`webhook-id` (the delivery id, the same on every retry), `webhook-timestamp` (unix seconds) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>." + raw body>`. The key is the bytes of
ZFARM_WEBHOOK_SECRET; those libraries take it as `whsec_` + its base64 (`standard_secret()` writes it).

The first format, `X-Zfarm-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + raw body>`, is still
sent beside it for one release, then dropped: move receivers to the Standard Webhooks headers.
In both, the timestamp is inside the signed text, so a captured request cannot be replayed later than the
receiver's tolerance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

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


# ---- Standard Webhooks -----------------------------------------------------------------------------

ID_HEADER, TIMESTAMP_HEADER, STANDARD_SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"


def standard_secret(secret: str) -> str:
    """The secret as Standard Webhooks libraries take it: `whsec_` + base64 of its bytes."""
    return "whsec_" + base64.b64encode(secret.encode()).decode()


def _standard_digest(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def standard_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature for this body."""
    t = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(t),
        STANDARD_SIGNATURE_HEADER: f"v1,{_standard_digest(secret, msg_id, t, body)}",
    }


def verify_standard(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Raises SignatureError unless the Standard Webhooks headers sign `body` within `tolerance` seconds."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lower.get(h) for h in (ID_HEADER, TIMESTAMP_HEADER, STANDARD_SIGNATURE_HEADER))
    if not (msg_id and stamp and signatures):
        raise SignatureError(f"missing {ID_HEADER}, {TIMESTAMP_HEADER} or {STANDARD_SIGNATURE_HEADER} header")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise SignatureError(f"malformed {TIMESTAMP_HEADER} header: {stamp!r}") from exc
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise SignatureError(f"signature timestamp is {age:.0f} s away from now (tolerance {tolerance:.0f} s)")
    expected = _standard_digest(secret, msg_id, timestamp, body)
    for item in signatures.split(" "):  # several signatures while a secret is being rotated
        version, _, value = item.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise SignatureError("signature does not match the body")
