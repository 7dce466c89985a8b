"""The transport-neutral router and the HTTP settings on their own: plain HttpRequest in,
HttpResponse out, no aiohttp and no server (as a native transport would drive them)."""

from __future__ import annotations

import asyncio
import json

import pytest

from naiad.kernel.bus import Bus
from naiad.kernel.inference.errors import ErrorCode, InferenceError
from naiad.kernel.messages import ServerLiveQuery, ServerReadyQuery
from naiad.kernel.schema import ConfigError
from naiad.services.http.config import HttpConfig, parse_restricted_api
from naiad.services.http.errors import status_for
from naiad.services.http.router import HttpRequest, Router
from naiad.services.http.routes import build_router


def _bus(ready: bool = True) -> Bus:
    bus = Bus()

    async def live(_):
        return True

    async def is_ready(_):
        return ready

    bus.handle(ServerLiveQuery, live)
    bus.handle(ServerReadyQuery, is_ready)
    bus.freeze()
    return bus


def _call(router: Router, method: str, path: str, headers=None, body=b""):
    return asyncio.run(router.dispatch(HttpRequest(method, path, headers or {}, body)))


def test_not_found_method_not_allowed_and_restriction_order():
    router = build_router(_bus(), HttpConfig(restricted_api=["health,logging:x-key=v"]))
    r = _call(router, "GET", "/v2/unknown")
    assert (r.status, json.loads(r.body)) == (404, {"error": "Not Found"})
    # A restricted route answers 403 before looking at the method, as Triton.
    r = _call(router, "POST", "/v2/health/live")
    assert (r.status, json.loads(r.body)) == (403, {"error": "This API is restricted, expecting header 'x-key'"})
    r = _call(router, "POST", "/v2/health/live", {"x-key": "v"})
    assert (r.status, json.loads(r.body)) == (405, {"error": "Method Not Allowed"})
    assert _call(router, "GET", "/v2/health/live", {"x-key": "v"}).status == 200
    assert _call(router, "GET", "/v2/health/ready", {"x-key": "wrong"}).status == 403


def test_health_reflects_the_bus_reply_and_missing_services_are_503():
    assert _call(build_router(_bus(ready=False)), "GET", "/v2/health/ready").status == 400
    router = build_router(_bus())
    r = _call(router, "GET", "/v2/models/stats")  # nobody answers statistics on this bus
    assert (r.status, json.loads(r.body)["error"]) == (503, "the server does not support model statistics")
    r = _call(router, "GET", "/v2/trace/setting")
    assert (r.status, json.loads(r.body)["error"]) == (503, "the server does not support tracing")
    r = _call(router, "GET", "/v2")
    assert r.status == 503 and "ServerMetadataQuery" in json.loads(r.body)["error"]


def test_path_parameters_and_versions():
    router = build_router(_bus())
    handler, params, status, category = router.resolve("POST", "/v2/models/m.x-1/versions/12/infer")
    assert status == 200 and params == {"model": "m.x-1", "version": "12"} and category == "inference"
    assert router.resolve("GET", "/v2/models/m/versions/v1")[2] == 404
    assert router.resolve("GET", "/v2/models/m/versions/1/trace/setting")[2] == 404
    assert router.resolve("GET", "/v2/models/stats")[3] == "statistics"
    assert router.resolve("POST", "/v2/repository/r/models/m/load")[1] == {"repository": "r", "model": "m"}
    assert router.resolve("GET", "/v2/systemsharedmemory/region/a/status")[1] == {"region": "a"}


def test_status_mapping():
    assert [status_for(c) for c in ErrorCode] == [400, 500, 404, 400, 503, 501, 400, 400]


def test_handler_errors_become_error_bodies():
    router = Router()

    async def boom(_):
        raise InferenceError("nope", ErrorCode.UNSUPPORTED)

    async def bug(_):
        raise RuntimeError("bad")

    router.add("GET", "/a", boom)
    router.add("GET", "/b/{x}", bug)
    r = _call(router, "GET", "/a")
    assert (r.status, json.loads(r.body)) == (501, {"error": "nope"})
    r = _call(router, "GET", "/b/1")
    assert r.status == 500 and "bad" in json.loads(r.body)["error"]
    assert r.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("specs,words", [
    (["health"], "option format"),
    (["health:k"], "option format"),
    (["health:=v"], "option format"),
    (["health:k="], "option format"),
    (["healthy:k=v"], "unknown restricted api 'healthy'"),
    (["health:k=v", "health,trace:j=w"], "can not be specified in multiple config groups"),
])
def test_restricted_api_specs_are_checked(specs, words):
    with pytest.raises(ConfigError, match=words):
        parse_restricted_api(specs)


def test_restricted_api_parsing_and_config_validation():
    assert parse_restricted_api(["model-repository,shared-memory:admin-key=a=b", "trace:t=1"]) == {
        "model-repository": ("admin-key", "a=b"), "shared-memory": ("admin-key", "a=b"), "trace": ("t", "1")}
    with pytest.raises(ConfigError):
        HttpConfig(restricted_api=["bogus:k=v"]).validate()
    with pytest.raises(ConfigError, match="not a valid RE2 expression"):
        HttpConfig(header_forward_pattern="(").validate()
