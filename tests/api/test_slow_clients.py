"""Slow clients (issue 17, item 5): a connection that sends half a request head, or half a body, is answered 408
and closed within its deadline instead of being held forever. Real uvicorn, raw sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvicorn

from api.app import create_app
from api.serving import server_config
from core.settings import FarmSettings, get_settings
from migrations.runner import upgrade
from tests.farm_helpers import wait_for

DEADLINE = 1.0


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, int]]:
    url = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(url)
    settings = FarmSettings(
        data_dir=tmp_path,
        database_url=url,
        model="tiny",
        auth=False,
        request_head_timeout_seconds=DEADLINE,
        request_body_timeout_seconds=DEADLINE,
        keep_alive_timeout_seconds=30,  # longer than the deadlines: they, not the keep-alive timer, close
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(server_config(create_app(settings), settings, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(timeout=15)
    redis.Redis.from_url(redis_url).delete(get_settings().queue)


def _held_for(address: tuple[str, int], *parts: bytes, pause: float = 0.0) -> tuple[float, bytes]:
    """Sends the parts (pausing between them), then reads until the server closes: (seconds open, answer)."""
    with socket.create_connection(address, timeout=10) as conn:
        started = time.monotonic()
        for part in parts:
            try:
                conn.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # closed by the server mid-request: what the deadline is for
            time.sleep(pause)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"the server held the connection for 10 s (answered {answer[:200]!r})")
        return time.monotonic() - started, answer


def test_a_half_sent_request_head_is_answered_408_and_closed(server: tuple[str, int]) -> None:
    held, answer = _held_for(server, b"GET /healthz HTTP/1.1\r\nHost: farm\r\nX-Slow: ")
    assert answer.startswith(b"HTTP/1.1 408 ") and DEADLINE * 0.9 <= held < DEADLINE + 2


def test_a_connection_that_sends_nothing_is_closed(server: tuple[str, int]) -> None:
    held, answer = _held_for(server)
    assert answer.startswith(b"HTTP/1.1 408 ") and held < DEADLINE + 2


def test_a_head_trickled_a_byte_at_a_time_is_still_cut_at_its_deadline(server: tuple[str, int]) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: farm\r\nX-Slow: " + b"a" * 40
    held, answer = _held_for(server, *(head[i : i + 1] for i in range(len(head))), pause=0.1)
    assert answer.startswith(b"HTTP/1.1 408 ") and held < DEADLINE + 2  # sending it all would take ~8 s


def test_a_half_sent_body_is_answered_408_and_closed(server: tuple[str, int]) -> None:
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: farm\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    held, answer = _held_for(server, head + b'{"prompt": "a')
    assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 seconds" in answer
    assert DEADLINE * 0.9 <= held < DEADLINE + 2


def test_a_kept_alive_connection_gets_a_deadline_for_its_next_head(server: tuple[str, int]) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: farm\r\n\r\n"
    held, answer = _held_for(server, request + b"GET /healthz HTTP/1.1\r\nHo")
    assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 408 " in answer and held < DEADLINE + 2


def test_a_prompt_client_is_not_cut(server: tuple[str, int]) -> None:
    body = b'{"prompt": "a mug"}'
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: farm\r\nContent-Type: application/json\r\nConnection: close\r\n"
    _, answer = _held_for(server, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 202 ")
