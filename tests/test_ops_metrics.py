"""``GET /metrics``: Prometheus text read back through prometheus_client's parser after real traffic —
values, labels, bounded cardinality — and who may read it."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fakes import FakeLLMServer, Reply
from test_chat_tickets import post_chat, wait_ticket

METRICS_TOKEN = "metrics-scraper-token-0123456789"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain")
        return parse(await r.text())


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: dict[Any, float], name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


async def test_requests_are_counted_by_route_template_method_and_status(serve: Any) -> None:
    client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN)
    await client.login("alice")
    before = await scrape(client)
    for _ in range(3):
        async with client.get("/health") as r:
            assert r.status == 200
    for i in range(100):  # 100 distinct paths, one route template
        async with client.get(f"/agents/no-such-agent-{i}") as r:
            assert r.status == 404
    async with client.get("/no/such/route/at/all") as r:
        assert r.status == 404
    after = await scrape(client)
    total = "gofannon_http_requests_total"
    assert value(after, total, route="/health", method="GET", status="200") - \
        value(before, total, route="/health", method="GET", status="200") == 3
    assert value(after, total, route="/agents/{agent_id}", method="GET", status="404") - \
        value(before, total, route="/agents/{agent_id}", method="GET", status="404") == 100
    assert value(after, total, route="other", method="GET", status="404") >= 1
    routes = {labels["route"] for labels in series(after, total)}
    assert not any("no-such-agent" in route or "no/such" in route for route in routes)  # never a raw path
    assert all(not labels.get("user") for labels in series(after, total))
    count = "gofannon_http_request_duration_seconds_count"
    assert value(after, count, route="/health", method="GET") - value(before, count, route="/health", method="GET") == 3
    inf_bucket = value(after, "gofannon_http_request_duration_seconds_bucket", route="/health", method="GET", le="+Inf")
    assert inf_bucket == value(after, count, route="/health", method="GET")
    assert value(after, "gofannon_http_requests_in_flight") >= 1  # the scrape itself
    # the store was timed, by backend and operation
    assert value(after, "gofannon_store_operation_duration_seconds_count", backend="sqlite", operation="get") > \
        value(before, "gofannon_store_operation_duration_seconds_count", backend="sqlite", operation="get")
    assert value(after, "gofannon_job_queue_depth", queue="inline") == 0
    assert value(after, "gofannon_sandbox_pool_size") == 1


async def test_llm_calls_tokens_cost_tickets_and_budget_refusals(serve: Any, fake_openai: FakeLLMServer) -> None:
    client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN, **fake_openai.env)
    await client.login("alice")
    before = await scrape(client)
    # 100M input tokens of gpt-4o cost $250: more than the $100 allowance, so the next call is refused
    fake_openai.script(Reply("expensive", input_tokens=100_000_000, output_tokens=20))
    assert (await wait_ticket(client, (await post_chat(client))["ticket_id"]))["status"] == "completed"
    refused = await wait_ticket(client, (await post_chat(client))["ticket_id"])
    assert refused["status"] == "failed" and "allowance" in refused["error"]
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gofannon_llm_calls_total", provider="openai", model="gpt-4o", outcome="success") == 1
    assert delta("gofannon_llm_tokens_total", provider="openai", model="gpt-4o", type="input") == 100_000_000
    assert delta("gofannon_llm_tokens_total", provider="openai", model="gpt-4o", type="output") == 20
    assert abs(delta("gofannon_llm_cost_usd_total", provider="openai", model="gpt-4o") - 250.0002) < 1e-6
    assert delta("gofannon_llm_call_duration_seconds_count", provider="openai") == 1
    assert delta("gofannon_budget_refusals_total") == 1
    assert delta("gofannon_chat_tickets_total", outcome="completed") == 1
    assert delta("gofannon_chat_tickets_total", outcome="failed") == 1
    assert delta("gofannon_chat_ticket_duration_seconds_count", outcome="completed") == 1


async def test_model_names_agent_code_makes_up_do_not_become_series_of_their_own(
        serve: Any, fake_openai: FakeLLMServer) -> None:
    """Agent code may name any model; a model the catalog does not list is counted as ``unlisted`` (its provider
    and outcome kept), so no user can fill the series cap with names (or put text of theirs in a label)."""
    from test_agents_run_code import code, run

    client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN, **fake_openai.env)
    await client.login("alice")
    before = await scrape(client)
    out = await run(client, code("""
        from services.llm_service import call_llm

        async def run(input_dict, tools):
            for i in range(30):
                await call_llm(provider='openai', model=f'secret-of-alice-{i}', messages=[{'role': 'user', 'content': 'x'}])
            await call_llm(provider='openai', model='gpt-4o', messages=[{'role': 'user', 'content': 'x'}])
            return {'outputText': 'done'}
    """))
    assert out["error"] is None, out
    after = await scrape(client)
    assert not any("secret-of-alice" in str(labels) for labels in series(after, "gofannon_llm_calls_total"))
    calls = "gofannon_llm_calls_total"
    assert value(after, calls, provider="openai", model="unlisted", outcome="success") - \
        value(before, calls, provider="openai", model="unlisted", outcome="success") == 30
    assert value(after, calls, provider="openai", model="gpt-4o", outcome="success") - \
        value(before, calls, provider="openai", model="gpt-4o", outcome="success") == 1


async def test_a_refusal_for_an_exhausted_workspace_allowance_is_a_budget_refusal_too(
        serve: Any, fake_openai: FakeLLMServer) -> None:
    client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN, **fake_openai.env)
    await client.login("alice")
    async with client.post("/workspaces", json={"displayName": "Team"}) as r:
        ws = (await r.json())["workspaceId"]
    async with client.put(f"/workspaces/{ws}/budget", json={"monthlyAllowance": 0}) as r:
        assert r.status == 200, await r.text()
    before = await scrape(client)
    body = {"messages": [{"role": "user", "content": "hi"}], "provider": "openai", "model": "gpt-4o"}
    async with client.post("/chat", json=body, headers={"X-Gofannon-Workspace": ws}) as r:
        assert r.status == 200, await r.text()
        ticket = (await r.json())["ticket_id"]
    refused = await wait_ticket(client, ticket)
    assert refused["status"] == "failed" and "workspace allowance" in refused["error"]
    after = await scrape(client)
    assert value(after, "gofannon_budget_refusals_total") - value(before, "gofannon_budget_refusals_total") == 1


async def test_v1_calls_are_counted_though_their_event_follows_the_answer(serve: Any,
                                                                          fake_openai: FakeLLMServer) -> None:
    client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN, **fake_openai.env)
    await client.login("alice")
    before = await scrape(client)
    for _ in range(3):
        fake_openai.script(Reply("hi", input_tokens=10, output_tokens=2))
        async with client.post("/v1/chat/completions",
                               json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200, await r.text()
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gofannon_llm_calls_total", provider="openai", model="gpt-4o", outcome="success") == 3
    assert delta("gofannon_llm_tokens_total", provider="openai", model="gpt-4o", type="input") == 30
    assert delta("gofannon_llm_call_duration_seconds_count", provider="openai") == 3


async def test_agent_runs_are_counted_by_outcome(serve: Any) -> None:
    client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN)
    await client.login("alice")
    before = await scrape(client)
    ok = {"code": "async def run(input_dict, tools):\n    return {'outputText': 'ok'}\n",
          "inputDict": {}, "tools": {}, "gofannonAgents": []}
    bad = {**ok, "code": "async def run(input_dict, tools):\n    raise ValueError('no')\n"}
    for body in (ok, ok, bad):
        async with client.post("/agents/run-code", json=body) as r:
            assert r.status == 200, await r.text()
    after = await scrape(client)
    runs = "gofannon_agent_runs_total"
    assert value(after, runs, outcome="success") - value(before, runs, outcome="success") == 2
    assert value(after, runs, outcome="error") - value(before, runs, outcome="error") == 1
    started = "gofannon_sandbox_children_started_total"
    assert value(after, started) >= 3 and value(after, "gofannon_sandbox_child_start_seconds_total") > 0


async def test_login_failures_are_counted(serve: Any) -> None:
    client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN)
    before = await scrape(client)
    async with client.get("/users/me") as r:
        assert r.status == 401
    async with client.get("/agents", headers={"Authorization": "Bearer gft_" + "0" * 32 + "_" + "x" * 30}) as r:
        assert r.status == 401
    after = await scrape(client)
    name = "gofannon_login_failures_total"
    assert value(after, name, reason="unauthorized") - value(before, name, reason="unauthorized") == 2


async def test_only_admins_and_the_metrics_token_may_read(serve: Any) -> None:
    client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN)
    async with client.get("/metrics") as r:
        assert r.status == 401 and "detail" in await r.json()
    async with client.get("/metrics", headers={"Authorization": "Bearer wrong-token-of-the-same-length!"}) as r:
        assert r.status == 401
    await client.login("alice")
    async with client.get("/metrics") as r:
        assert r.status == 403
    async with client.post("/users/me/tokens", json={"name": "alice's"}) as r:
        alice_token = (await r.json())["token"]
    await client.login("admin")
    async with client.get("/metrics") as r:
        assert r.status == 200 and "gofannon_http_requests_total" in await r.text()
    async with client.post("/users/me/tokens", json={"name": "scraper"}) as r:
        admin_token = (await r.json())["token"]
    client.session.cookie_jar.clear()
    async with client.get("/metrics", headers={"Authorization": f"Bearer {admin_token}"}) as r:
        assert r.status == 200
    async with client.get("/metrics", headers={"Authorization": f"Bearer {alice_token}"}) as r:
        assert r.status == 403


async def test_metrics_off_serves_no_route_and_counts_nothing(serve: Any) -> None:
    client = await serve(GOFANNON_METRICS="off", GOFANNON_METRICS_TOKEN=METRICS_TOKEN)
    async with client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as r:
        assert r.status == 404


async def test_a_scrape_while_requests_run_concurrently_stays_parseable(serve: Any) -> None:
    client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN)

    async def hit() -> None:
        async with client.get("/health") as r:
            assert r.status == 200

    results = await asyncio.gather(*(hit() for _ in range(50)), scrape(client), scrape(client))
    assert value(results[-1], "gofannon_http_requests_total", route="/health", method="GET", status="200") >= 1


def _spawn(args: list[str], env: dict[str, str], log: Any) -> Any:
    import os
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.Popen([sys.executable, "-m", "gofannon", *args], env={**os.environ, **env}, cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


async def _get_text(url: str, timeout: float = 30.0) -> tuple[int, str]:
    """GET url, retrying while the process starts; (status, body)."""
    import time

    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    return r.status, await r.text()
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def test_a_worker_serves_its_own_metrics_on_its_metrics_port(
        serve: Any, redis_url: str, fake_openai: FakeLLMServer, tmp_path: Any) -> None:
    from conftest import free_port

    port = free_port()
    env = {"APP_ENV": "test", "REDIS_URL": redis_url, "GOFANNON_DATA_DIR": str(tmp_path / "data"),
           "GOFANNON_SANDBOX_POOL_SIZE": "1", **fake_openai.env}
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = _spawn(["worker", "--metrics-port", str(port)], env, log)
        try:
            for _ in range(600):
                if "ready on queue" in log_path.read_text() or worker.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            assert "ready on queue" in log_path.read_text(), log_path.read_text()
            client = await serve(REDIS_URL=redis_url, **fake_openai.env)
            await client.login("alice")
            fake_openai.script(Reply("from the worker", input_tokens=5, output_tokens=6))
            assert (await wait_ticket(client, (await post_chat(client))["ticket_id"]))["status"] == "completed"
            status, text = await _get_text(f"http://127.0.0.1:{port}/metrics")  # no credentials on its own port
            assert status == 200
            samples = parse(text)
            assert value(samples, "gofannon_chat_tickets_total", outcome="completed") == 1
            assert value(samples, "gofannon_llm_calls_total", provider="openai", model="gpt-4o", outcome="success") == 1
            assert value(samples, "gofannon_llm_tokens_total", provider="openai", model="gpt-4o", type="output") == 6
            assert ("gofannon_job_queue_depth", (("queue", "gofannon"),)) in samples
            assert value(samples, "gofannon_job_queue_depth", queue="gofannon") == 0
            assert value(samples, "gofannon_store_operation_duration_seconds_count", backend="sqlite",
                         operation="update") >= 1  # the worker's own store, timed
            assert value(samples, "gofannon_sandbox_pool_size") == 1
            # the job carried the request id of the POST that submitted it: the worker's lines about it have it
            fake_openai.script(Reply(status=401, error="bad key", error_code="invalid_api_key"))
            async with client.post("/chat", json={"messages": [{"role": "user", "content": "x"}],
                                                  "provider": "openai", "model": "gpt-4o"},
                                   headers={"X-Request-Id": "from-the-api-42"}) as r:
                ticket = (await r.json())["ticket_id"]
            assert (await wait_ticket(client, ticket))["status"] == "failed"
            for _ in range(100):
                if "chat_ticket_failed" in log_path.read_text():
                    break
                await asyncio.sleep(0.05)
            failed = [line for line in log_path.read_text().splitlines() if "chat_ticket_failed" in line]
            assert failed and "[request_id=from-the-api-42]" in failed[0], log_path.read_text()[-2000:]
        finally:
            worker.terminate()
            worker.wait(30)


async def test_serve_metrics_port_answers_without_auth_while_the_api_port_still_asks(tmp_path: Any) -> None:
    from conftest import free_port

    port, metrics_port = free_port(), free_port()
    env = {"APP_ENV": "test", "GOFANNON_DATA_DIR": str(tmp_path / "data"), "GOFANNON_SANDBOX_POOL_SIZE": "0"}
    with (tmp_path / "serve.log").open("w") as log:
        server = _spawn(["serve", "--port", str(port), "--metrics-port", str(metrics_port)], env, log)
        try:
            for _ in range(3):
                assert (await _get_text(f"http://127.0.0.1:{port}/health"))[0] == 200
            assert (await _get_text(f"http://127.0.0.1:{port}/metrics"))[0] == 401
            status, text = await _get_text(f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200
            assert value(parse(text), "gofannon_http_requests_total", route="/health", method="GET", status="200") >= 3
        finally:
            server.terminate()
            server.wait(30)


async def test_a_plugin_that_fails_to_load_is_counted(serve: Any, tmp_path: Any, monkeypatch: Any) -> None:
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "gofannon_ops_broken_plugin.py").write_text("import gofannon_no_such_dependency\n")
    info = site / "gofannon_ops_broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gofannon-ops-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[gofannon]\nops-broken = gofannon_ops_broken_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        client = await serve(GOFANNON_METRICS_TOKEN=METRICS_TOKEN)
        samples = await scrape(client)
    finally:
        sys.modules.pop("gofannon_ops_broken_plugin", None)
    assert value(samples, "gofannon_plugin_load_failures", plugin="ops-broken") == 1
    assert value(samples, "gofannon_plugin_load_failures", plugin="metrics") == 0


async def test_rq_queue_depth_and_oldest_waiting_age(serve: Any, redis_url: str) -> None:
    client = await serve(REDIS_URL=redis_url, GOFANNON_METRICS_TOKEN=METRICS_TOKEN)  # no worker: jobs wait
    await client.login("alice")
    before = await scrape(client)
    assert value(before, "gofannon_job_queue_depth", queue="gofannon") == 0
    assert value(before, "gofannon_job_queue_oldest_age_seconds", queue="gofannon") == 0
    for _ in range(2):
        await post_chat(client)
    await asyncio.sleep(0.5)
    after = await scrape(client)
    assert value(after, "gofannon_job_queue_depth", queue="gofannon") == 2
    assert 0.4 <= value(after, "gofannon_job_queue_oldest_age_seconds", queue="gofannon") < 60


async def test_inline_queue_depth_and_oldest_waiting_age(serve: Any, fake_openai: FakeLLMServer) -> None:
    # One job at a time, and the model takes its time: the tickets behind the first one wait for a slot.
    client = await serve(**fake_openai.env, GOFANNON_JOB_CONCURRENCY="1", GOFANNON_METRICS_TOKEN=METRICS_TOKEN)
    await client.login("alice")
    fake_openai.respond(lambda req: Reply("slow", delay=1.5))
    tickets = [(await post_chat(client))["ticket_id"] for _ in range(3)]
    await asyncio.sleep(0.5)
    during = await scrape(client)
    assert value(during, "gofannon_job_queue_depth", queue="inline") == 2
    assert 0.4 <= value(during, "gofannon_job_queue_oldest_age_seconds", queue="inline") < 60
    for ticket in tickets:
        assert (await wait_ticket(client, ticket))["status"] == "completed"
    after = await scrape(client)
    assert value(after, "gofannon_job_queue_depth", queue="inline") == 0
    assert value(after, "gofannon_job_queue_oldest_age_seconds", queue="inline") == 0


def test_counters_past_the_series_cap_share_one_cell_whichever_path_counts_them() -> None:
    """Past ``MAX_SERIES`` label sets a counter's new series all count into its ``other`` one. An LLM call's fast
    path (cells it keeps) and a plain ``inc`` (a failed call) may both land there: both are counted, and a scrape
    shows their sum."""
    from gofannon_plugins.observability.metrics.stats import MAX_SERIES, OTHER, LocalSink

    sink = LocalSink()
    for i in range(MAX_SERIES):
        sink.inc("gofannon_llm_calls", ("p", f"m{i}", "success"))
    sink.llm_call("p", "past-the-cap", 10, 5, 0.5, 20.0)  # a new series: counted as other
    sink.inc("gofannon_llm_calls", ("p", "also-past", "error"))  # another new one: the same other cell
    sink.llm_call("p", "past-the-cap", 1, 1, 0.25, 10.0)
    series, _ = sink.snapshot()
    calls = series["gofannon_llm_calls"]
    assert calls[(OTHER, OTHER, OTHER)] == 3.0
    assert sum(calls.values()) == MAX_SERIES + 3
    assert series["gofannon_llm_cost_usd"][("p", "past-the-cap")] == 0.75
