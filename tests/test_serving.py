"""The HTTP service: answers equal the model's own, sessions keep state, every 4xx path,
metrics, reload under load, and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from serving_helpers import (
    LiveServer,
    assert_same,
    client,
    expected,
    free_port,
    pairs,
    wait_until,
)

from nextclick.models import load_model
from nextclick.serving.app import ServeSettings, create_app
from nextclick.serving.engine import Engine
from nextclick.serving.store import MAX_ITEMS


@pytest.mark.parametrize("label",
                         ["gru4rec", "vsknn", "itemknn", "pop", "sasrec", "srgnn", "gcegnn"])
def test_each_click_answers_what_the_model_recommends(model_dirs, popular_ids, label):
    clicks = popular_ids[3:6]
    with client(model_dirs[label]) as c:
        for n in range(1, len(clicks) + 1):
            r = c.post("/v1/sessions/s1/events", json={"item_id": clicks[n - 1], "k": 10})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["session_id"] == "s1" and body["unknown_item"] is False
            assert body["clicks"] == n
            assert_same(pairs(body), expected(model_dirs[label], clicks[:n], 10))
        # Looking again does not click.
        again = c.get("/v1/sessions/s1/recommendations", params={"k": 10}).json()
        assert pairs(again) == pairs(body) and again["clicks"] == 3
        assert c.get("/v1/sessions/s1").json()["items"] == clicks


def test_unknown_item_is_recorded_without_advancing(model_dirs, popular_ids):
    with client(model_dirs["gru4rec"]) as c:
        first = c.post("/v1/sessions/u/events", json={"item_id": popular_ids[0]}).json()
        r = c.post("/v1/sessions/u/events", json={"item_id": "no-such-item"})
        assert r.status_code == 200
        assert r.json()["unknown_item"] is True and r.json()["clicks"] == 2
        assert pairs(r.json()) == pairs(first)
        # Kept in the history (a later model may know it), skipped by this one.
        assert c.get("/v1/sessions/u").json()["items"] == [popular_ids[0], "no-such-item"]
        after = c.post("/v1/sessions/u/events", json={"item_id": popular_ids[1], "k": 10})
        assert_same(pairs(after.json()), expected(model_dirs["gru4rec"], popular_ids[:2], 10))


def test_exclusions(model_dirs, popular_ids):
    a, b = popular_ids[1], popular_ids[2]
    with client(model_dirs["gru4rec"]) as c:
        c.post("/v1/sessions/x/events", json={"item_id": a})
        exclude = [popular_ids[0], "zzz"]
        body = c.post("/v1/sessions/x/events",
                      json={"item_id": b, "k": 15, "exclude": exclude}).json()  # fmt: skip
        assert_same(pairs(body), expected(model_dirs["gru4rec"], [a, b], 15, [popular_ids[0]]))
        seen = c.get("/v1/sessions/x/recommendations",
                     params={"k": 15, "exclude_seen": True}).json()  # fmt: skip
        assert_same(pairs(seen), expected(model_dirs["gru4rec"], [a, b], 15, [a, b]))


def test_delete_ends_the_session(model_dirs, popular_ids):
    with client(model_dirs["gru4rec"]) as c:
        empty = c.get("/v1/sessions/d/recommendations").json()
        c.post("/v1/sessions/d/events", json={"item_id": popular_ids[0]})
        assert c.delete("/v1/sessions/d").json() == {"session_id": "d", "deleted": True}
        assert pairs(c.get("/v1/sessions/d/recommendations").json()) == pairs(empty)
        r = c.delete("/v1/sessions/d")
        assert r.status_code == 404 and r.json() == {"error": "no session 'd'"}


def test_stateless_recommend_one_prefix_and_many(model_dirs, popular_ids):
    prefixes = [popular_ids[:2], popular_ids[5:8], [popular_ids[9], "unknown"]]
    with client(model_dirs["gru4rec"]) as c:
        one = c.post("/v1/recommend", json={"items": prefixes[0], "k": 5}).json()
        assert_same(pairs(one), expected(model_dirs["gru4rec"], prefixes[0], 5))
        many = c.post("/v1/recommend", json={"prefixes": prefixes, "k": 5}).json()
        assert len(many["results"]) == 3
        assert_same(pairs(many["results"][0]), pairs(one))
        assert many["results"][2]["unknown_items"] == ["unknown"]
        assert_same(pairs(many["results"][2]), expected(model_dirs["gru4rec"], prefixes[2][:1], 5))


def test_session_ids_of_either_type_and_string_item_ids(model_dirs, popular_ids):
    with client(model_dirs["gru4rec"]) as c:
        by_int = c.post("/v1/sessions/a/events", json={"item_id": popular_ids[0]}).json()
        by_str = c.post("/v1/sessions/b/events", json={"item_id": str(popular_ids[0])}).json()
        assert pairs(by_int) == pairs(by_str) and by_str["unknown_item"] is False


BAD_REQUESTS = [
    ("post", "/v1/sessions/s/events", b"{not json", 400, "request body is not valid JSON"),
    ("post", "/v1/sessions/s/events", {"k": 5}, 422, "body.item_id: Field required"),
    ("post", "/v1/sessions/s/events", [1, 2], 422, "body: expected a JSON object"),
    ("post", "/v1/sessions/s/events", {"item_id": 1, "k": 0}, 422, "body.k: Input should be"),
    ("post", "/v1/sessions/s/events", {"item_id": 1, "k": 1001}, 422, "body.k: Input should be"),
    ("post", "/v1/sessions/s/events", {"item_id": 1, "k": "many"}, 422,
     "body.k: expected an integer"),
    ("post", "/v1/sessions/s/events", {"item_id": [1]}, 422, "body.item_id: expected an item id"),
    ("post", "/v1/sessions/s/events", {"item_id": "x" * 300}, 422,
     "body.item_id: expected an item id: an integer (below 2^53 in size; larger ones as "
     "strings) or a string of at most 256 characters"),
    ("post", "/v1/sessions/s/events", {"item_id": 1, "colour": "red"}, 422,
     "body.colour: Extra inputs are not permitted"),
    ("post", "/v1/sessions/s/events", {"item_id": 1, "exclude_seen": "yes"}, 422,
     "body.exclude_seen: Input should be a valid boolean"),
    ("post", "/v1/sessions/s/events", {"item_id": 1, "exclude": list(range(1001))}, 422,
     "body.exclude: List should have at most 1000 items"),
    ("post", "/v1/sessions/bad%20id!/events", {"item_id": 1}, 422, "path.session_id"),
    ("get", "/v1/sessions/s/recommendations?k=-1", None, 422, "query.k"),
    ("post", "/v1/recommend", {"k": 3}, 422, "give either items (one prefix) or prefixes"),
    ("post", "/v1/recommend", {"items": [1], "prefixes": [[1]]}, 422, "give either items"),
    ("post", "/v1/admin/reload", {}, 403, "admin endpoints are disabled"),
    ("get", "/v1/nothing-here", None, 404, "Not Found"),
    ("put", "/v1/sessions/s/events", {"item_id": 1}, 405, "Method Not Allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "body", "status", "message"), BAD_REQUESTS,
                         ids=[f"{b[3]}-{b[4]}" for b in BAD_REQUESTS])  # fmt: skip
def test_bad_requests_get_a_clear_4xx(model_dirs, method, url, body, status, message):
    with client(model_dirs["gru4rec"]) as c:
        kwargs = (
            {"content": body, "headers": {"content-type": "application/json"}}
            if isinstance(body, bytes) else {"json": body}
        )  # fmt: skip
        r = c.request(method.upper(), url, **(kwargs if body is not None else {}))
        assert r.status_code == status, r.text
        if message is not None:
            assert message in r.json()["error"]
        assert c.get("/healthz").json() == {"status": "ok"}


def test_oversized_body_is_413_with_or_without_a_length(model_dirs):
    with client(model_dirs["gru4rec"], max_body_bytes=1000) as c:
        r = c.post("/v1/recommend", json={"items": list(range(400)), "k": 5})
        assert r.status_code == 413
        assert r.json() == {"error": "request body over 1000 bytes"}

        def chunks(n: int):  # a body sent in chunks, with no Content-Length
            yield b'{"items": ['
            yield ", ".join(["1"] * n).encode()
            yield b"]}"

        headers = {"content-type": "application/json"}
        r = c.post("/v1/recommend", content=chunks(400), headers=headers)
        assert r.status_code == 413 and r.json() == {"error": "request body over 1000 bytes"}
        r = c.post("/v1/recommend", content=chunks(3), headers=headers)
        assert r.status_code == 200 and len(r.json()["items"]) == 20
        text = c.get("/metrics").text
    assert 'nextclick_requests_total{method="POST",route="unmatched",status="413"} 2.0' in text


def test_odd_methods_share_one_metrics_label(model_dirs):
    with client(model_dirs["pop"]) as c:
        for method in ("FOO", "BAR"):
            assert c.request(method, "/v1/items").status_code == 405
        text = c.get("/metrics").text
    assert 'nextclick_requests_total{method="other",route="/v1/items",status="405"} 2.0' in text


def test_admin_reload_needs_the_token(model_dirs):
    with client(model_dirs["gru4rec"], admin_token="s3cret") as c:
        assert c.post("/v1/admin/reload").status_code == 401
        wrong = c.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "Bearer" in wrong.json()["error"]
        bad = c.post("/v1/admin/reload", headers={"Authorization": "Bearer s3cret"},
                     json={"model_dir": "/nonexistent/model"})  # fmt: skip
        assert bad.status_code == 400 and "cannot load model" in bad.json()["error"]


def test_metrics_count_requests_sessions_and_model(model_dirs, popular_ids):
    with client(model_dirs["gru4rec"]) as c:
        for i in range(3):
            c.post(f"/v1/sessions/m{i}/events", json={"item_id": popular_ids[i]})
        c.post("/v1/sessions/m0/events", json={"item_id": "x", "k": 0})
        text = c.get("/metrics").text
        version = Engine.load(model_dirs["gru4rec"]).version
    route = 'route="/v1/sessions/{session_id}/events"'
    assert f'nextclick_requests_total{{method="POST",{route},status="200"}} 3.0' in text
    assert f'nextclick_requests_total{{method="POST",{route},status="422"}} 1.0' in text
    assert f"nextclick_request_seconds_count{{{route}}} 4.0" in text
    assert "nextclick_sessions 3.0" in text
    assert f'nextclick_model_info{{model="gru4rec",version="{version}"}} 1.0' in text


def test_openapi_documents_the_routes(model_dirs):
    with client(model_dirs["pop"]) as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert {"/v1/sessions/{session_id}/events", "/v1/sessions/{session_id}/recommendations",
            "/v1/sessions/{session_id}", "/v1/recommend", "/healthz", "/readyz",
            "/metrics", "/v1/admin/reload"} <= set(paths)  # fmt: skip


def test_memory_store_forgets_idle_and_least_recent_sessions(model_dirs, popular_ids):
    with client(model_dirs["gru4rec"], ttl=0.2) as c:
        c.post("/v1/sessions/t/events", json={"item_id": popular_ids[0]})
        assert c.get("/v1/sessions/t").status_code == 200
        time.sleep(0.3)
        assert c.get("/v1/sessions/t").status_code == 404
    # A one-click session of a 32-unit GRU is counted as 696 bytes (400 + id + item +
    # 64 floats): a 2,100-byte bound keeps the last three.
    with client(model_dirs["gru4rec"], max_session_bytes=2100) as c:
        for i in range(6):
            c.post(f"/v1/sessions/lru{i}/events", json={"item_id": popular_ids[i]})
        held = [i for i in range(6) if c.get(f"/v1/sessions/lru{i}").status_code == 200]
    assert held == [3, 4, 5]


def test_history_is_bounded_and_replayed_after_reload(model_dirs, popular_ids):
    clicks = [popular_ids[i % 20] for i in range(MAX_ITEMS + 5)]
    with client(model_dirs["gru4rec"], admin_token="t") as c:
        for item in clicks:
            c.post("/v1/sessions/long/events", json={"item_id": item})
        session = c.get("/v1/sessions/long").json()
        assert session["items"] == clicks[-MAX_ITEMS:] and session["clicks"] == len(clicks)
        r = c.post("/v1/admin/reload", headers={"Authorization": "Bearer t"},
                   json={"model_dir": str(model_dirs["gru4rec-other"])})  # fmt: skip
        assert r.status_code == 200 and r.json()["previous_version"] != r.json()["model_version"]
        after = c.get("/v1/sessions/long/recommendations", params={"k": 10}).json()
        assert after["model_version"] == r.json()["model_version"]
        # The new model's state is rebuilt from the stored items.
        assert_same(pairs(after), expected(model_dirs["gru4rec-other"], clicks[-MAX_ITEMS:], 10))


def test_a_model_reading_the_first_clicks_keeps_those_past_the_bound(model_dirs, popular_ids):
    clicks = [popular_ids[i % 20] for i in range(MAX_ITEMS + 5)]
    with client(model_dirs["narm-first"]) as c:
        for item in clicks:
            last = c.post("/v1/sessions/long/events", json={"item_id": item, "k": 10}).json()
        assert c.get("/v1/sessions/long").json()["items"] == clicks[:MAX_ITEMS]
    # NARM with truncation=first reads clicks[:3] however long the session grows.
    assert_same(pairs(last), expected(model_dirs["narm-first"], clicks, 10))
    assert_same(pairs(last), expected(model_dirs["narm-first"], clicks[:3], 10))


# -- a real server on loopback ---------------------------------------------------------------


def test_real_server_concurrent_clicks_on_one_session_lose_none(model_dirs, popular_ids):
    app = create_app(ServeSettings(model_dir=str(model_dirs["gru4rec"])))
    clicks = [popular_ids[i % 10] for i in range(40)]

    async def send_all(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url) as http:
            responses = await asyncio.gather(*(
                http.post("/v1/sessions/busy/events", json={"item_id": item, "k": 5})
                for item in clicks
            ))  # fmt: skip
        return [r.status_code for r in responses]

    with LiveServer(app) as server:
        assert asyncio.run(send_all(server.url)) == [200] * len(clicks)
        session = httpx.get(f"{server.url}/v1/sessions/busy").json()
        final = httpx.get(f"{server.url}/v1/sessions/busy/recommendations?k=10").json()
    assert session["clicks"] == len(clicks)
    assert sorted(session["items"]) == sorted(clicks)
    # The state is the model's after exactly these clicks, in the order they were recorded.
    assert_same(pairs(final), expected(model_dirs["gru4rec"], session["items"], 10))


def test_real_server_reload_during_a_stream_of_requests_loses_none(model_dirs, popular_ids):
    app = create_app(ServeSettings(model_dir=str(model_dirs["gru4rec"]), admin_token="t"))
    old = Engine.load(model_dirs["gru4rec"]).version
    new = Engine.load(model_dirs["gru4rec-other"]).version

    async def stream(url: str) -> tuple[list[int], set[str]]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:

            async def clicks(session: int) -> list[httpx.Response]:
                return [await http.post(f"/v1/sessions/r{session}/events",
                                        json={"item_id": popular_ids[i % 20]})
                        for i in range(25)]  # fmt: skip

            async def reload() -> httpx.Response:
                await asyncio.sleep(0.15)
                other = str(model_dirs["gru4rec-other"])
                return await http.post("/v1/admin/reload", json={"model_dir": other},
                                       headers={"Authorization": "Bearer t"})  # fmt: skip

            *streams, reloaded = await asyncio.gather(*(clicks(s) for s in range(8)), reload())
            assert reloaded.status_code == 200, reloaded.text
            responses = [r for s in streams for r in s]
            codes = [r.status_code for r in responses]
            versions = {r.json()["model_version"] for r in responses}
            counts = [(await http.get(f"/v1/sessions/r{s}")).json()["clicks"] for s in range(8)]
            assert counts == [25] * 8
        return codes, versions

    with LiveServer(app) as server:
        codes, versions = asyncio.run(stream(server.url))
    assert codes == [200] * 200
    assert versions == {old, new}


def test_serve_refuses_several_workers_without_a_shared_store(model_dirs):
    done = subprocess.run(
        [sys.executable, "-m", "nextclick.cli", "serve", str(model_dirs["pop"]), "--workers", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "nextclick: error: --workers 2 needs a session store shared by the processes: add "
        "--state redis://HOST:PORT (the in-process store would split sessions)"
    )


def test_serve_bad_model_directory_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "nextclick.cli", "serve", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "nextclick: error:" in done.stderr


def test_record_bytes_round_trip():
    from nextclick.serving.store import SessionRecord

    record = SessionRecord((1, "a", 3), b"\x00\n\xff", "abc", 7, "f00d", ("e1", "e2"))
    assert SessionRecord.from_bytes(record.to_bytes()) == record
    assert json.loads(record.to_bytes().split(b"\n")[0]) == [
        [1, "a", 3], "abc", 7, "f00d", ["e1", "e2"]
    ]


@pytest.mark.parametrize("state", ["memory", "redis"])
def test_compare_and_set_survives_delete_and_recreate(state, tmp_path):
    # A writer holding a read from before a delete and re-creation must not overwrite.
    from serving_helpers import RedisServer

    from nextclick.serving.store import SessionRecord, open_store

    async def scenario(url: str | None) -> list[bool]:
        store = open_store(url, 60, 1 << 20)

        async def put(record: SessionRecord, expected: str | None) -> bool:
            return (await store.put_many([("s", record, expected)]))[0]

        try:
            first = SessionRecord(("x",), clicks=1, token="t1")
            results = [await put(first, None)]
            read = await store.get("s")
            await store.delete("s")
            results.append(await put(SessionRecord(("y",), clicks=1, token="t2"), None))
            results.append(await put(SessionRecord(("x", "z"), token="t3"), read.token))
            results.append((await store.get("s")).items == ("y",))
            results.append(await put(SessionRecord(("y", "w"), token="t4"), "t2"))
            return results
        finally:
            await store.close()

    if state == "memory":
        assert asyncio.run(scenario(None)) == [True, True, False, True, True]
    else:
        with RedisServer(tmp_path) as redis:
            assert asyncio.run(scenario(redis.url)) == [True, True, False, True, True]


# -- exactly the model's answers ---------------------------------------------------------------


@pytest.mark.parametrize("label", ["itemknn", "vsknn"])
def test_real_server_lists_equal_the_models_own_at_k_beyond_its_evidence(
    model_dirs, rsc15_sample, label
):
    # k = 50 is more than these models have evidence for after most clicks: the lists are
    # the items they score above 0, ties by index, exactly as `recommend_ids` gives them.
    model = load_model(model_dirs[label])
    test = rsc15_sample.test
    rng = np.random.default_rng(5)
    sessions = [model.item_index_.decode(test.session(s)[:5]).tolist()
                for s in rng.choice(test.n_sessions, 30, replace=False)]  # fmt: skip
    shorter = 0
    with LiveServer(create_app(ServeSettings(model_dir=str(model_dirs[label])))) as server:
        with httpx.Client(base_url=server.url) as http:
            for n, clicks in enumerate(sessions):
                for t, item in enumerate(clicks):
                    r = http.post(f"/v1/sessions/x{n}/events", json={"item_id": item, "k": 50})
                    want = model.recommend_ids(clicks[: t + 1], 50)
                    assert pairs(r.json()) == want  # same ids, same float64 scores
                    shorter += len(want) < 50
    assert shorter > 0


def test_raw_ids_find_items_as_the_item_index_does(model_dirs, popular_ids):
    model = load_model(model_dirs["gru4rec"])
    item = popular_ids[0]
    sent = [item, str(item), f" {item} ", f"{item}.0", f"+{item}", "abc", -1, str(2**70)]
    with client(model_dirs["gru4rec"]) as c:
        for n, raw in enumerate(sent):
            body = c.post(f"/v1/sessions/ids{n}/events", json={"item_id": raw}).json()
            assert body["unknown_item"] is (model.item_index_.lookup(raw) is None), raw
            assert model.item_index_.encode(np.array([raw], dtype=object))[0] == (
                -1 if body["unknown_item"] else model.item_index_.lookup(raw)
            )
        assert [c.get(f"/v1/sessions/ids{n}").json()["items"] for n in range(3)] == [
            [item], [str(item)], [f" {item} "]
        ]  # fmt: skip
        for bad in (True, 1.5, None, 2**53):
            r = c.post("/v1/sessions/bad/events", json={"item_id": bad})
            assert r.status_code == 422 and r.json()["error"].startswith("body.item_id"), bad
    # The first three name the same item, the other five none.
    assert [model.item_index_.lookup(raw) is None for raw in sent] == [False] * 3 + [True] * 5


def test_a_retried_click_with_its_event_id_counts_once(model_dirs, popular_ids):
    with client(model_dirs["gru4rec"]) as c:
        body = {"item_id": popular_ids[1], "event_id": "click-17"}
        first = c.post("/v1/sessions/retry/events", json=body).json()
        second = c.post("/v1/sessions/retry/events", json=body).json()
        assert (first["duplicate"], second["duplicate"]) == (False, True)
        assert first["clicks"] == second["clicks"] == 1
        assert pairs(first) == pairs(second)
        assert c.get("/v1/sessions/retry").json()["items"] == [popular_ids[1]]


# -- bursts and connections on a real server ----------------------------------------------------


async def _post_raw(port: int, path: str, body: dict) -> tuple[int, dict]:
    """One request on its own connection: 500 of them at once need no client pool."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))  # fmt: skip
    answer = json.loads(await reader.readexactly(length))
    writer.close()
    return int(head.split(b" ", 2)[1]), answer


def test_real_server_bursts_of_500_concurrent_clicks_lose_and_fail_none(model_dirs, popular_ids):
    # The review's burst: 200 clicks on one session and 300 on distinct ones, all at once.
    app = create_app(ServeSettings(model_dir=str(model_dirs["gru4rec"])))

    async def burst(port: int, n: int) -> list[tuple[int, dict]]:
        jobs = [_post_raw(port, f"/v1/sessions/b{n}-one/events",
                          {"item_id": popular_ids[i % 20], "k": 20}) for i in range(200)]
        jobs += [_post_raw(port, f"/v1/sessions/b{n}-{i}/events",
                           {"item_id": popular_ids[i % 20], "k": 20}) for i in range(300)]
        return await asyncio.gather(*jobs)  # fmt: skip

    with LiveServer(app) as server:
        for n in range(3):
            answers = asyncio.run(burst(server.port, n))
            assert [status for status, _ in answers] == [200] * 500
            one = [body["clicks"] for _, body in answers[:200]]
            assert sorted(one) == list(range(1, 201))  # each click applied once
            session = httpx.get(f"{server.url}/v1/sessions/b{n}-one").json()
            assert session["clicks"] == 200


def read_response(s: socket.socket) -> bytes:
    """One whole HTTP response: the head and body may arrive in separate segments."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += s.recv(4096)
    assert len(body) == length  # nothing of a later response was read
    return head + b"\r\n\r\n" + body


def test_an_idle_connection_outlives_the_clients_keep_alive(model_dirs, popular_ids):
    # httpx keeps idle connections 5 s; a server closing them at 5 s races a client reusing
    # one then, and the click is lost in flight. `nextclick serve` keeps them 75 s.
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nextclick.cli", "serve", str(model_dirs["pop"]),
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200,
                   timeout=60, what="nextclick serve")  # fmt: skip
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
            s.sendall(request)
            assert read_response(s).startswith(b"HTTP/1.1 200")
            time.sleep(6.0)
            s.sendall(request)
            assert read_response(s).startswith(b"HTTP/1.1 200")
    finally:
        process.terminate()
        process.wait(timeout=20)
