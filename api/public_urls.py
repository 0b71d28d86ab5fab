"""The base of every URL the API writes into an answer (image, batch, manifest and archive links, Location).

With ZFARM_PUBLIC_URL set, that and nothing else: a request's Host header is the client's to choose, and a
link built from `Host: evil.example` would send the next reader of a record, a manifest or a webhook there.
Unset, links follow the URL the client used (its Host header), which is right for one farm reached by one name.
"""

from __future__ import annotations

from fastapi import Request


def base_url(request: Request) -> str:
    """With a trailing slash, like Starlette's request.base_url."""
    public: str | None = request.app.state.settings.public_url
    return public.rstrip("/") + "/" if public else str(request.base_url)


def url_for(request: Request, name: str, **path_params: str) -> str:
    return base_url(request).rstrip("/") + str(request.app.url_path_for(name, **path_params))
