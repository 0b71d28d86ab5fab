"""The batch archive: every image named by its key, plus manifest.csv, streamed as a zip.

zipstream-ng writes each member as it is read (images are stored, not recompressed: PNG, WebP and JPEG
are compressed already). Jobs are read a page at a time and each page's files are streamed before the
next page is read, so memory holds one page of rows plus the zip's central directory (about 100 bytes
per member, which the zip format needs at the end). The manifest is spooled to a temporary file while
the images stream (kept in memory only while small) and added last.

From a bucket each member is one GET whose body is read a chunk at a time, opened only when the zip writer
reaches it: one object open at a time, never a page's worth. Whether each file still exists is asked first
(a HEAD per file), so the manifest and the zip's names agree.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

from zipstream import ZIP_STORED, ZipStream

from api.manifest import COLUMNS, FileNamer, ImageUrl, manifest_lines
from core.storage import CHUNK, Storage, read_chunks
from models import Job

SPOOL_IN_MEMORY = 1024 * 1024


def archive_chunks(jobs: Iterable[Job], storage: Storage, image_url: ImageUrl) -> Iterator[bytes]:
    zs = ZipStream(compress_type=ZIP_STORED)
    namer = FileNamer()
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, mode="w+b") as spool:
        text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(COLUMNS)
        for n, job in enumerate(jobs, start=1):
            missing = {im.storage_key for im in job.images if not storage.exists(im.storage_key)}
            names = namer.names(job, missing)
            writer.writerows(manifest_lines(job, names, image_url))
            for image in job.images:
                if (name := names.get((image.index, image.rendition))) is None:
                    continue
                _add(zs, storage, image.storage_key, name, image.bytes)
            _add_inputs(zs, job, storage)
            if n % 100 == 0:
                yield from zs.all_files()
        yield from zs.all_files()
        text.flush()
        spool.seek(0)
        zs.add(_spool_chunks(spool), "manifest.csv")
        yield from zs.finalize()
        text.detach()


def _add_inputs(zs: ZipStream, job: Job, storage: Storage) -> None:
    """A job's input images beside its outputs: `_inputs/KEY.png` (and `_inputs/KEY.mask.png`). Rendition
    folders are named [a-z0-9]..., so `_inputs` cannot be one of them."""
    stem = job.item_key or job.id
    for suffix, asset in (("", job.image_asset), (".mask", job.mask_asset)):
        if asset is None or not storage.exists(asset.storage_key):
            continue
        _add(zs, storage, asset.storage_key, f"_inputs/{stem}{suffix}.png", asset.bytes)


def _add(zs: ZipStream, storage: Storage, key: str, name: str, size: int) -> None:
    path = storage.path(key)
    if path is not None:
        zs.add_path(str(path), name)
    else:
        zs.add(_object_chunks(storage, key), name, size=size)


def _object_chunks(storage: Storage, key: str) -> Iterator[bytes]:
    # A generator: the GET happens when the zip writer reaches this member, not when the page is listed.
    yield from read_chunks(storage.open(key))


def _spool_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk
