"""Floor: a bare uvloop `asyncio.Protocol` with llhttp (`httptools`) echoing binary tensors.

No web framework: one parser per connection, callbacks collect the URL, two headers and the body,
and the response is written with one `transport.writelines`. The least Python can do per HTTP
inference while still parsing the request and echoing the tensor.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import httptools
import uvloop

import common

NOT_FOUND = b'{"error":"Not Found"}'


class EchoProtocol(asyncio.Protocol):
    __slots__ = ("transport", "parser", "url", "hlen", "body", "keep_alive")

    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.hlen = None
        self.body = []

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.transport.close()
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    def on_message_begin(self):
        self.url = b""
        self.hlen = None
        self.body = []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        if len(name) == 31 and name.lower() == b"inference-header-content-length":
            self.hlen = int(value)

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0].decode()
        if method == b"POST" and path.endswith("/infer"):
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            hlen = self.hlen if self.hlen is not None else len(body)
            header, size = common.echo_header(body[:hlen], path.split("/")[3])
            tensor = memoryview(body)[hlen:hlen + size]
            self.transport.writelines((
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
                % (len(header), len(header) + size), header, tensor))
        elif method == b"GET":
            if path in ("/v2/health/ready", "/v2/health/live"):
                out, status = b"", b"200 OK"
            else:
                out = common.get_json(path)
                status = b"200 OK" if out is not None else b"404 Not Found"
                out = out if out is not None else NOT_FOUND
            self.transport.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (status, len(out), out))
        else:
            self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(NOT_FOUND), NOT_FOUND))
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    a = common.args(__doc__)
    uvloop.run(serve(a.host, a.port))


if __name__ == "__main__":
    main()
