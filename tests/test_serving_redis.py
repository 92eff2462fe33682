"""The service with its sessions in a real redis-server: shared by replicas and processes,
503 while Redis is down and back when it returns, reloads reaching every process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving_helpers import RedisServer, assert_same, client, expected, free_port, pairs, wait_until

from nextclick.serving.engine import Engine


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path) as server:
        yield server


def test_two_replicas_share_sessions(model_dirs, popular_ids, redis_server):
    a, b = popular_ids[4], popular_ids[7]
    with client(model_dirs["gru4rec"], state=redis_server.url) as one, \
            client(model_dirs["gru4rec"], state=redis_server.url) as two:  # fmt: skip
        assert one.post("/v1/sessions/shared/events", json={"item_id": a}).json()["clicks"] == 1
        assert two.post("/v1/sessions/shared/events", json={"item_id": b}).json()["clicks"] == 2
        seen = one.get("/v1/sessions/shared/recommendations", params={"k": 10}).json()
        assert_same(pairs(seen), expected(model_dirs["gru4rec"], [a, b], 10))
        assert two.get("/v1/sessions/shared").json()["items"] == [a, b]
        assert "nextclick_sessions 1.0" in one.get("/metrics").text
        assert one.delete("/v1/sessions/shared").status_code == 200
        assert two.get("/v1/sessions/shared").status_code == 404


def test_two_replicas_racing_on_one_session_lose_no_click(model_dirs, popular_ids,
                                                          redis_server):  # fmt: skip
    # Two in-process replicas, each on its own thread and event loop, click the same
    # session at the same time: their compare-and-sets collide and retry.
    clicks = [popular_ids[i % 10] for i in range(30)]
    with client(model_dirs["gru4rec"], state=redis_server.url) as one, \
            client(model_dirs["gru4rec"], state=redis_server.url) as two:  # fmt: skip

        def send(c, items):
            return [c.post("/v1/sessions/race2/events", json={"item_id": i}).status_code
                    for i in items]  # fmt: skip

        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(send, (one, two), (clicks[::2], clicks[1::2])))
        assert codes == [[200] * 15, [200] * 15]
        session = one.get("/v1/sessions/race2").json()
        assert session["clicks"] == 30 and sorted(session["items"]) == sorted(clicks)
        final = two.get("/v1/sessions/race2/recommendations", params={"k": 10}).json()
    assert_same(pairs(final), expected(model_dirs["gru4rec"], session["items"], 10))


def test_redis_down_is_503_with_a_clear_message_then_recovers(model_dirs, popular_ids,
                                                              redis_server):  # fmt: skip
    with client(model_dirs["vsknn"], state=redis_server.url) as c:
        assert c.post("/v1/sessions/k/events", json={"item_id": popular_ids[0]}).status_code == 200
        redis_server.kill()
        r = c.post("/v1/sessions/k/events", json={"item_id": popular_ids[1]})
        assert r.status_code == 503
        assert r.json()["error"].startswith(f"session store {redis_server.url} unavailable: ")
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200
        redis_server.start()  # same port, empty (no persistence)
        wait_until(lambda: c.get("/readyz").status_code == 200, what="readyz after restart")
        r = c.post("/v1/sessions/k/events", json={"item_id": popular_ids[1]})
        assert r.status_code == 200 and r.json()["clicks"] == 1


@pytest.fixture
def two_processes(model_dirs, redis_server):
    """``nextclick serve --workers 2 --state redis://...`` on a free port."""
    port = free_port()
    env = {**os.environ, "NEXTCLICK_ADMIN_TOKEN": "t"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nextclick.cli", "serve", str(model_dirs["gru4rec"]),
         "--port", str(port), "--workers", "2", "--state", redis_server.url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout=60,
                   what="two service processes")  # fmt: skip
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_two_processes_lose_no_concurrent_click(model_dirs, popular_ids, two_processes):
    clicks = [popular_ids[i % 12] for i in range(45)]

    async def send() -> list[int]:
        # A connection per request, so that both processes take clicks of the same session.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=two_processes, limits=limits, timeout=30) as http:
            responses = await asyncio.gather(*(
                http.post("/v1/sessions/race/events", json={"item_id": item, "k": 3})
                for item in clicks
            ))  # fmt: skip
        return [r.status_code for r in responses]

    assert asyncio.run(send()) == [200] * len(clicks)
    session = httpx.get(f"{two_processes}/v1/sessions/race").json()
    assert session["clicks"] == len(clicks)
    assert sorted(session["items"]) == sorted(clicks)
    # The hidden state is the model's after these clicks in the order they were recorded.
    final = httpx.get(f"{two_processes}/v1/sessions/race/recommendations?k=10").json()
    assert_same(pairs(final), expected(model_dirs["gru4rec"], session["items"], 10))


def test_reload_reaches_every_process(model_dirs, popular_ids, two_processes):
    new = Engine.load(model_dirs["gru4rec-other"]).version
    other = str(model_dirs["gru4rec-other"])
    r = httpx.post(f"{two_processes}/v1/admin/reload", json={"model_dir": other},
                   headers={"Authorization": "Bearer t"})  # fmt: skip
    assert r.status_code == 200 and r.json()["model_version"] == new
    time.sleep(2.5)  # the other process hears of it on the Redis channel
    seen = {}
    for _ in range(40):
        with httpx.Client(base_url=two_processes) as http:  # a new connection each time
            ready = http.get("/readyz").json()
        seen[ready["pid"]] = ready["model_version"]
    assert len(seen) == 2 and set(seen.values()) == {new}


def test_serve_with_unreachable_redis_is_one_line(model_dirs):
    port = free_port()  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "nextclick.cli", "serve", str(model_dirs["pop"]), "--workers",
         "2", "--state", f"redis://127.0.0.1:{port}/0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(f"nextclick: error: session store redis://127.0.0.1:{port}/0 "
                                  "unavailable: ")  # fmt: skip
    assert done.stderr.count("\n") == 1


def test_a_replica_started_after_a_reload_serves_the_reloaded_model(model_dirs, redis_server):
    other = str(model_dirs["gru4rec-other"])
    with client(model_dirs["gru4rec"], state=redis_server.url, admin_token="t") as first:
        r = first.post("/v1/admin/reload", json={"model_dir": other},
                       headers={"Authorization": "Bearer t"})  # fmt: skip
        assert r.json()["announced"] is True
        new = r.json()["model_version"]
    # Started on the old directory, it reads the announced one from Redis.
    with client(model_dirs["gru4rec"], state=redis_server.url) as late:
        wait_until(lambda: late.get("/readyz").json()["model_version"] == new,
                   what="the late replica to load the announced model")  # fmt: skip


def test_two_processes_take_a_burst_of_200_clicks_on_one_session(model_dirs, popular_ids,
                                                                 two_processes):  # fmt: skip
    # Both processes take clicks of the session at once; each loses compare-and-sets to the
    # other again and again, and redoes its clicks until they are written: none is lost and
    # none is refused (a fixed number of retries would answer 409 here).
    async def send() -> list[httpx.Response]:
        limits = httpx.Limits(max_keepalive_connections=0, max_connections=200)
        async with httpx.AsyncClient(base_url=two_processes, limits=limits, timeout=60) as http:
            return await asyncio.gather(*(
                http.post("/v1/sessions/crowd/events",
                          json={"item_id": popular_ids[i % 15], "k": 3})
                for i in range(200)
            ))  # fmt: skip

    responses = asyncio.run(send())
    assert [r.status_code for r in responses] == [200] * 200
    assert sorted(r.json()["clicks"] for r in responses) == list(range(1, 201))
    assert httpx.get(f"{two_processes}/v1/sessions/crowd").json()["clicks"] == 200
