from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, String
from sqlalchemy.types import TypeDecorator

from models.statuses import JobStatus


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on both backends (SQLite stores naive values; we read them as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: use timezone-aware UTC values")
        return value

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class StatusType(TypeDecorator[JobStatus]):
    """A job's status: stored as its text (VARCHAR(16), as before), read back as the JobStatus member."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: JobStatus | str | None, dialect: object) -> str | None:
        return None if value is None else JobStatus(value).value  # an unknown status raises here

    def process_result_value(self, value: str | None, dialect: object) -> JobStatus | None:
        return None if value is None else JobStatus(value)
