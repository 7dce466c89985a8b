"""Request and response body compression as Triton's HTTP frontend does it for `/infer`
(`GetRequestCompressionType`, `GetResponseCompressionType`, `CompressionTypeUsed`):
`Content-Encoding` gzip / deflate (zlib stream) / identity on the way in, the best-weighted
of identity / deflate / gzip from `Accept-Encoding` on the way out."""

from __future__ import annotations

import zlib
from typing import Iterable

from naiad.kernel.inference.errors import ErrorCode, InferenceError

from .errors import HttpError

IDENTITY, GZIP, DEFLATE = "identity", "gzip", "deflate"


class BodyTooLarge(InferenceError):
    """The decompressed body is larger than the configured limit (HTTP 413)."""


def request_encoding(content_encoding: str | None) -> str:
    """The request body's encoding; anything but gzip, deflate, identity (or none) is
    refused with UNSUPPORTED and an `Accept-Encoding: gzip, deflate` header."""
    if not content_encoding or content_encoding == IDENTITY:
        return IDENTITY
    if content_encoding == GZIP or content_encoding == DEFLATE:
        return content_encoding
    raise HttpError("Unsupported compression type", ErrorCode.UNSUPPORTED, {"Accept-Encoding": "gzip, deflate"})


def decompress(body: bytes | bytearray | memoryview, encoding: str, limit: int) -> bytearray:
    """Inflate `body` (gzip or zlib-wrapped deflate; raw deflate is accepted too), never
    producing more than `limit` bytes."""
    if encoding == GZIP:
        wbits = 16 + zlib.MAX_WBITS
    else:
        wbits = zlib.MAX_WBITS
    try:
        try:
            return _inflate(body, wbits, limit)
        except zlib.error:
            if encoding != DEFLATE:
                raise
            return _inflate(body, -zlib.MAX_WBITS, limit)  # headerless deflate
    except zlib.error as exc:
        raise InferenceError.invalid(f"failed to decompress the request body ({encoding}): {exc}") from None


# Inflate in steps of this much output, so a bomb is stopped at the limit with one step's
# slack, and the output is never held twice (one `decompress` call joins its blocks).
_STEP = 1 << 20


def _inflate(body: bytes | bytearray | memoryview, wbits: int, limit: int) -> bytearray:
    d = zlib.decompressobj(wbits)
    out = bytearray()
    pending: bytes | bytearray | memoryview = body
    while not d.eof:
        step = d.decompress(pending, _STEP)
        out += step
        if len(out) > limit:
            raise BodyTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
        pending = d.unconsumed_tail
        if not pending and len(step) < _STEP:  # all input taken and nothing held back
            break
    if not d.eof:
        raise zlib.error("incomplete or truncated stream")
    return out


def response_encoding(accept_encoding: str | None) -> str:
    """Triton's `CompressionTypeUsed`: split on ',', an optional ';q=' weight each
    (default 1), keep the highest-weighted of identity, deflate, gzip (first wins ties);
    identity when nothing acceptable is named."""
    if not accept_encoding:
        return IDENTITY
    best, weight = IDENTITY, 0.0
    for item in accept_encoding.split(","):
        item = item.lstrip(" ")
        if not item:
            continue
        qpos = item.find(";q=")
        if qpos == 0:
            continue
        kind = item if qpos < 0 else item[:qpos]
        q = 1.0
        if qpos >= 0:
            try:
                q = float(item[qpos + 3:].strip())
            except ValueError:
                continue
        if kind in (IDENTITY, DEFLATE, GZIP) and q > weight:
            best, weight = kind, q
    return best


def compress(parts: Iterable[bytes | bytearray | memoryview], encoding: str) -> bytes:
    """Compress the concatenation of `parts` (no intermediate join)."""
    if encoding == GZIP:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, zlib.MAX_WBITS)
    out = [c.compress(p) for p in parts]
    out.append(c.flush())
    return b"".join(out)
