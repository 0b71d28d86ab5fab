"""One line instead of a traceback when a command cannot reach what it needs: the API, the database, Redis.

Client commands speak HTTP (httpx); server commands open the database (SQLAlchemy) or Redis. The exception
types are recognised by module so that a client-only install, without SQLAlchemy or redis, still loads this.
"""

from __future__ import annotations

import httpx

UNREACHABLE_EXIT = 2


def _mask(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def _database_url() -> str:
    from core.settings import get_settings

    return _mask(get_settings().resolved_database_url)


def explain(exc: BaseException) -> str | None:
    """The line to print for an error that means 'could not reach it', else None (a real bug: let it raise)."""
    if isinstance(exc, httpx.TransportError):
        try:
            url = str(exc.request.url)
        except RuntimeError:  # raised without its request
            url = "the API"
        hint = (
            "the URL needs http:// or https://"
            if isinstance(exc, httpx.UnsupportedProtocol)
            else "is the farm up? `zfarm up` starts one; --url or ZFARM_URL points elsewhere"
        )
        return f"cannot reach the API at {url}: {_first_line(exc)} ({hint})"
    module = type(exc).__module__
    if module.startswith("sqlalchemy") and type(exc).__name__ in ("OperationalError", "ProgrammingError"):
        hint = (
            "run `zfarm migrate` first"
            if "no such table" in str(exc) or "does not exist" in str(exc)
            else ("set ZFARM_DATA_DIR or ZFARM_DATABASE_URL to the farm's database")
        )
        return f"cannot use the database at {_database_url()}: {_first_line(exc)} ({hint})"
    if module.startswith("redis") and type(exc).__name__ in ("ConnectionError", "TimeoutError"):
        return f"cannot reach Redis: {_first_line(exc)} (set ZFARM_REDIS_URL, or unset it for an embedded one)"
    return None
