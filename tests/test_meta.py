"""Service metadata, errors and cross-cutting HTTP behaviour."""

from __future__ import annotations

from typing import Any


async def test_health_reports_healthy(client: Any) -> None:
    async with client.get("/health") as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "healthy" and body["service"] == "user-service"


async def test_root_is_the_reference_heartbeat(client: Any) -> None:
    async with client.get("/") as r:
        assert await r.json() == {"Hello": "World", "Service": "User-Service"}


async def test_unknown_route_is_a_json_404(client: Any) -> None:
    async with client.get("/no/such/route") as r:
        assert r.status == 404
        assert await r.json() == {"detail": "Not Found"}


async def test_wrong_method_is_a_json_405(client: Any) -> None:
    async with client.delete("/health") as r:
        assert r.status == 405
        assert await r.json() == {"detail": "Method Not Allowed"}


async def test_trailing_slash_redirects_to_the_route(client: Any) -> None:
    async with client.get("/health/") as r:
        assert r.status == 307
        assert r.headers["Location"] == "/health"


async def test_cors_admits_only_the_frontend_origin(client: Any) -> None:
    hdrs = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-thing"}
    async with client.request("OPTIONS", "/agents", headers=hdrs) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert r.headers["Access-Control-Allow-Headers"] == "content-type,x-thing"
    async with client.request("OPTIONS", "/agents", headers={**hdrs, "Origin": "http://evil.example"}) as r:
        assert r.status == 400
    async with client.get("/health", headers={"Origin": "http://localhost:3000"}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    async with client.get("/health", headers={"Origin": "http://evil.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers
