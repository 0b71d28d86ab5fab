"""Finding a job or a batch by its id or by a unique prefix of it (the CLI and the page print 8 characters)."""

from __future__ import annotations

import re
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.batches import Batch
from models.jobs import Job

MIN_PREFIX = 4
ID_LENGTH = 32  # uuid4().hex
_HEX = re.compile(r"^[0-9a-f]+$")
Row = TypeVar("Row", Job, Batch)


class AmbiguousId(LookupError):
    def __init__(self, kind: str, prefix: str, matches: list[str]) -> None:
        shown = ", ".join(m[:12] + "..." for m in matches[:2]) + (" and more" if len(matches) > 2 else "")
        super().__init__(f"{kind} id prefix {prefix!r} is ambiguous: it matches {shown}; give more characters")


def find(session: Session, model: type[Row], given: str, tenant: str | None) -> Row | None:
    """The row with this id, else the one row whose id starts with it; None when there is none for this tenant.

    Another tenant's rows are never matched, so they answer exactly like ids that do not exist."""
    row = session.get(model, given)
    if row is not None:
        return row if tenant is None or row.tenant == tenant else None
    prefix = given.strip().lower()
    if not (MIN_PREFIX <= len(prefix) < ID_LENGTH and _HEX.match(prefix)):
        return None
    # The range lets the primary key's index find the candidates; startswith keeps the answer exact.
    query = select(model).where(model.id >= prefix, model.id < prefix + "g", model.id.startswith(prefix))
    if tenant is not None:
        query = query.where(model.tenant == tenant)
    rows = list(session.scalars(query.order_by(model.id).limit(3)))
    if len(rows) > 1:
        raise AmbiguousId(model.__name__.lower(), prefix, [r.id for r in rows])
    return rows[0] if rows else None
