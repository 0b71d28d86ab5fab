"""How long a large JSON batch holds the API's event loop (a benchmark, not a test).

Serves the API with uvicorn on a fresh SQLite database, starts a probe on the server's event loop (a 10 ms
sleep in a loop, recording how late it wakes), posts a JSON batch of ROWS rows with a 700-character column
(50,000 rows: ~37 MB; refused after reading for an unknown placeholder, so nothing is written), and prints
the request's time and the probe's worst lateness: the longest time every other request had to wait.

    .venv/bin/python -m bench.batch_loop_lag [ROWS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from api.app import create_app
from core.settings import FarmSettings
from migrations.runner import upgrade
from tests.farm_helpers import serve_http


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    tmp = Path(tempfile.mkdtemp(prefix="zfarm-loop-lag-"))
    url = f"sqlite:///{tmp / 'zfarm.db'}"
    upgrade(url)
    app = create_app(FarmSettings(data_dir=tmp, database_url=url, model="tiny", auth=False))
    lag: dict[str, float] = {"max": 0.0}
    probes: list[asyncio.Task[None]] = []

    async def probe() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            lag["max"] = max(lag["max"], time.perf_counter() - started - 0.01)

    @app.get("/lag")
    async def get_lag(reset: bool = False) -> dict[str, float]:
        if not probes:
            probes.append(asyncio.create_task(probe()))
        if reset:
            lag["max"] = 0.0
        return lag

    catalog = [{"sku": f"S{i}", "product": "p" * 700, "width": 512} for i in range(rows)]
    body = json.dumps({"template": "a {colour} {product}", "rows": catalog}).encode()
    with serve_http(app) as base:
        httpx.get(base + "/lag")
        time.sleep(0.3)
        httpx.get(base + "/lag", params={"reset": True})
        started = time.perf_counter()
        answer = httpx.post(
            base + "/v1/batches", content=body, headers={"content-type": "application/json"}, timeout=300
        )
        took = time.perf_counter() - started
        worst = httpx.get(base + "/lag").json()["max"]
    print(
        f"{len(body) / 1e6:.1f} MB batch: answered {answer.status_code} in {took:.1f} s; "
        f"event loop held up to {worst:.2f} s"
    )


if __name__ == "__main__":
    main()
