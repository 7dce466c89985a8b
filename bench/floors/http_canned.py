"""Floor: aiohttp + uvloop answering every inference with one fixed, precomputed body.

The least a Python HTTP server can do per request: aiohttp's parser and response path, no tensor
handling at all (the request body is read and dropped unparsed). Also answers the metadata and config calls.
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
    header, body = common.canned_response(a.elements)
    headers = {"Inference-Header-Content-Length": str(len(header)),
               "Content-Type": "application/octet-stream"}

    count = common.COUNT

    async def infer(request: web.Request) -> web.Response:
        count.n += 1
        # Read (and drop) the body: left unread, aiohttp and perf_analyzer's curl stall each
        # other at c=32 (both sides with unread bytes on the connection).
        await request.read()
        return web.Response(body=body, headers=headers)

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
