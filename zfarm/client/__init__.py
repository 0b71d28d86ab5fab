"""Python client for the zfarm HTTP API. Depends on httpx only (and the standard library).

    from zfarm.client import Client
    with Client("http://127.0.0.1:8000") as farm:
        job = farm.submit("a ceramic mug on marble", seed=7)
        job = farm.wait(job["id"])
        paths = farm.download(job["id"], "out/")
        batch = farm.upload_batch("catalog.csv", template="studio photo of a {product}", preset="square-1024")
        farm.wait_batch(batch["id"])
        farm.download_batch(batch["id"], "out/catalog/")  # images named by key + manifest.csv

`AsyncClient` has the same calls as coroutines. Both are one piece of code: `_async/client.py` is the
source, `_sync/client.py` is generated from it.
"""

from zfarm.client._async.client import AsyncClient
from zfarm.client._common import JobFailed, ZfarmError
from zfarm.client._sync.client import Client
from zfarm.client.types import Batch, BatchCreated, Image, Job, Lora, Rendition, Worker

__all__ = [
    "AsyncClient",
    "Batch",
    "BatchCreated",
    "Client",
    "Image",
    "Job",
    "JobFailed",
    "Lora",
    "Rendition",
    "Worker",
    "ZfarmError",
]
