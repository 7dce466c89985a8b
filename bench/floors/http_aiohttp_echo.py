"""Floor: aiohttp + uvloop parsing the binary-tensor request and echoing the tensor back.

What a Python HTTP server on aiohttp must at least do per inference: read the body, parse the JSON
header, slice out the tensor (no copy) and send header + tensor. No model, no batching, no IPC.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import uvloop
from aiohttp import web

import common


def main() -> None:
    a = common.args(__doc__)

    async def infer(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        hlen = int(request.headers.get("Inference-Header-Content-Length", len(body)))
        header, size = common.echo_header(body[:hlen], request.match_info["model"])
        tensor = memoryview(body)[hlen:hlen + size]
        resp = web.Response(body=header + tensor,
                            headers={"Inference-Header-Content-Length": str(len(header)),
                                     "Content-Type": "application/octet-stream"})
        return resp

    async def get(request: web.Request) -> web.Response:
        if request.path in ("/v2/health/ready", "/v2/health/live"):
            return web.Response()
        out = common.get_json(request.path)
        if out is None:
            return web.json_response({"error": "Not Found"}, status=404)
        return web.Response(body=out, content_type="application/json")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_post("/v2/models/{model}/versions/{v}/infer", infer)
    app.router.add_get("/{tail:.*}", get)
    uvloop.install()
    web.run_app(app, host=a.host, port=a.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
