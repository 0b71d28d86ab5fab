"""The Python client, sync and async, against a served farm with a real worker: every call, one scenario.

The two clients are one piece of code (the sync one is generated from the async one); this scenario runs
through each of them, so a call that breaks in either, or a generated file that drifts, fails here.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.observe.farm import ObservedFarm
from tests.image_helpers import cutout, decoded
from zfarm.client import AsyncClient, Client, Job, ZfarmError

pytestmark = pytest.mark.e2e
SMALL = {"width": 256, "height": 256, "steps": 2}


class Blocking:
    """Drives an AsyncClient from plain code: each coroutine runs to completion on one event loop."""

    def __init__(self, client: AsyncClient) -> None:
        self.client, self.loop = client, asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        call = getattr(self.client, name)
        return lambda *args, **kwargs: self.loop.run_until_complete(call(*args, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def client(request: pytest.FixtureRequest, farm: ObservedFarm) -> Iterator[Any]:
    if request.param == "sync":
        with Client(farm.url) as sync:
            yield sync
        return
    blocking = Blocking(AsyncClient(farm.url))
    try:
        yield blocking
    finally:
        blocking.close()


def test_jobs_through_the_client(client: Any, farm: ObservedFarm, tmp_path: Path) -> None:
    # submit, follow the event stream, read the record, download
    seen: list[Job] = []
    job = client.submit("a linen apron", seed=11, renditions=[{"name": "thumb", "width": 128, "height": 128}], **SMALL)
    final = client.wait(job["id"], timeout=120, on_update=seen.append, raise_on_failure=True)
    assert final["status"] == "succeeded" and seen[-1]["status"] == "succeeded"
    assert final == client.get(job["id"])
    assert job["id"] in [j["id"] for j in client.jobs(status="succeeded")]
    paths = client.download(job["id"], tmp_path / "out")
    assert sorted(p.name for p in paths) == [f"{job['id']}_0.png", f"{job['id']}_0_thumb.webp"]
    [image] = final["images"]
    assert hashlib.sha256(paths[0].read_bytes()).hexdigest() == image["sha256"]
    assert client.image_bytes(job["id"], 0, "thumb") == paths[1].read_bytes()
    # refusals arrive as ZfarmError naming the field
    with pytest.raises(ZfarmError) as refused:
        client.submit("a mug", width=1000)
    assert refused.value.status_code == 422 and "width" in str(refused.value)
    # cancel a queued job
    slow = [client.submit(f"a wide rug {n}", width=1024, height=1024, steps=30) for n in range(2)]
    canceled = client.cancel(slow[-1]["id"])
    assert canceled["cancel_requested"] is True
    client.cancel(slow[0]["id"])
    assert client.wait(slow[-1]["id"], timeout=120)["status"] == "canceled"
    # the farm
    assert client.health()["status"] == "ok"
    assert farm.worker_name in [w["name"] for w in client.workers()]
    assert "square-1024" in [p["name"] for p in client.presets()]
    client.save_template("apron", template="studio photo of a {material} apron")
    assert "apron" in [t["name"] for t in client.templates()]


def test_batches_through_the_client(client: Any, tmp_path: Path) -> None:
    # a saved template (saved again here: saving replaces one of the same name, and no test relies on another's)
    client.save_template("apron", template="studio photo of a {material} apron")
    # rows in memory, followed to the end, exported three ways
    created = client.create_batch(
        [{"sku": "A1", "material": "linen"}, {"sku": "A2", "material": "denim"}],
        template_name="apron",
        defaults=SMALL,
        name="aprons",
    )
    final = client.wait_batch(created["id"], timeout=180, poll=0.3)
    assert final["status"] == "succeeded" and final["counts"]["succeeded"] == 2
    assert created["id"] in [b["id"] for b in client.batches()]
    rows = list(csv.DictReader(io.StringIO(client.manifest(created["id"]))))
    assert sorted(r["key"] for r in rows) == ["A1", "A2"]
    archive = client.download_archive(created["id"], tmp_path / "a.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["A1.png", "A2.png", "manifest.csv"]
    files = client.download_batch(created["id"], tmp_path / "batch")
    assert sorted(p.name for p in files) == ["A1.png", "A2.png", "manifest.csv"]
    assert client.retry_failed(created["id"]) == 0
    # a CSV upload, canceled before its rows run
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("sku,material\nB1,wool\nB2,silk\n")
    uploaded = client.upload_batch(catalog, template="a {material} scarf", defaults={**SMALL, "steps": 30})
    assert uploaded["rows"] == 2
    canceled = client.cancel_batch(uploaded["id"])
    assert canceled["canceled_at"] is not None


def test_lora_adapters_through_the_client_and_the_cli(client: Any, farm: ObservedFarm, tmp_path: Path) -> None:
    import uuid

    from click.testing import CliRunner

    from tests.lora_helpers import make_tiny_lora
    from zfarm.cli import main

    name = f"brand-{uuid.uuid4().hex[:6]}"
    path = make_tiny_lora(tmp_path / "brand.safetensors", seed=7)
    # the client: add, list, read, use in a job, delete
    lora = client.add_lora(path, name, trigger_words="brandx", default_scale=0.6)
    assert (lora["name"], lora["rank"], lora["trigger_words"]) == (name, 4, "brandx")
    assert name in [item["name"] for item in client.loras()] and client.get_lora(name) == lora
    job = client.submit("a linen apron", seed=3, loras=[{"name": name}], add_trigger_words=True, **SMALL)
    final = client.wait(job["id"], timeout=120, raise_on_failure=True)
    assert final["loras"] == [{"name": name, "scale": 0.6, "sha256": lora["sha256"]}]
    client.delete_lora(name)
    with pytest.raises(ZfarmError) as gone:
        client.get_lora(name)
    assert gone.value.status_code == 404
    # the CLI: loras add / list / rm, and submit --lora
    cli = CliRunner()
    args = ["--url", farm.url]
    added = cli.invoke(main, ["loras", "add", str(path), "--name", name, "--default-scale", "0.5", *args])
    assert added.exit_code == 0, added.output
    listed = cli.invoke(main, ["loras", "list", *args])
    assert name in listed.output and "scale=0.5" in listed.output
    submitted = cli.invoke(
        main, ["submit", "a mug", "--lora", f"{name}:0.9", "--width", "256", "--height", "256", *args]
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.output.strip().splitlines()[0]
    assert client.wait(job_id, timeout=120)["loras"][0]["scale"] == 0.9
    assert cli.invoke(main, ["loras", "rm", name, *args]).exit_code == 0
    refused = cli.invoke(main, ["submit", "a mug", "--lora", f"{name}:strong", *args])
    assert refused.exit_code != 0 and "NAME:SCALE" in refused.output


def test_image_modes_through_the_client(client: Any, tmp_path: Path) -> None:
    # submit(image=path) uploads the file first; the same bytes are the same asset
    path = tmp_path / "bottle.png"
    cutout().save(path)
    main = {"name": "main", "background": "white", "width": 300, "height": 300, "format": "jpeg"}
    job = client.submit(
        "a bottle on a beach", mode="place", image=path, placement={"fit": 0.6}, renditions=[main], **SMALL
    )
    final = client.wait(job["id"], timeout=120, raise_on_failure=True)
    asset = client.upload_asset(path)
    assert final["inputs"]["image"]["id"] == asset["id"] and final["mode"] == "place"
    assert client.get_asset(asset["id"])["has_alpha"] is True
    stored = decoded(client.asset_bytes(asset["id"]))
    assert stored.size == (300, 400) and stored.mode == "RGBA"
    assert decoded(client.image_bytes(job["id"], 0, "main")).size == (300, 300)
    # an asset id or an asset record work as well as a path
    again = client.submit("a bottle in snow", mode="img2img", image=asset, strength=0.5, steps=2)
    assert client.wait(again["id"], timeout=120, raise_on_failure=True)["parameters"]["width"] == 300
    # a catalog with a directory of photos, zipped by the client
    photos = tmp_path / "photos"
    photos.mkdir()
    cutout(colour=(20, 120, 60)).save(photos / "mug.png")
    Image.new("RGB", (256, 256), "gray").save(photos / "ignored.png")
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("sku,product,image\nM1,a mug,mug.png\n")
    created = client.upload_batch(catalog, images=photos, template="{product} on a desk", mode="place", defaults=SMALL)
    assert client.wait_batch(created["id"], timeout=180, poll=0.3)["status"] == "succeeded"
    with pytest.raises(ZfarmError) as refused:
        client.submit("a mug", mode="place", image=tmp_path / "photos" / "ignored.png", **SMALL)
    assert refused.value.status_code == 422 and "cutout" in str(refused.value)
