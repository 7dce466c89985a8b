"""The control channel between the parent and a stub: a closed set of commands.

Transport: one AF_UNIX SOCK_SEQPACKET socketpair per stub. A packet is one message (no
framing needed), region fds ride along with SCM_RIGHTS, and a peer's death reads as EOF.
A message is a tuple `(cmd, frees, *fields)` encoded with `marshal` (both ends run the
same interpreter; marshal is the fastest codec for tuples of str/int/bytes/dict).
Tensor bytes never travel here: fields carry (region id, offset, size) handles into the
sender's shared-memory arena (`shm`).

`frees` is on every message: the ids of allocations in the *receiver's* arena that the
sender has finished with. Releasing memory thus costs no message of its own: it rides on
the next message going that way (an explicit ACK is sent only when a lot piles up).

A batch costs one packet each way: EXECUTE down, RESPONSES (or, for a decoupled model,
its RESPONSE stream and EXEC_DONE) up.

Field layouts (all tuples; "tdesc" is a tensor descriptor
`(name, datatype, shape, offset, nbytes)` with `offset` relative to the message's data
block `(rid, base, total)` in the sender's arena; rid -1: no block):

parent -> stub
  INIT          (config: dict)            everything the stub needs to load the model
  AUTO_COMPLETE (config: dict)            same keys; the stub runs auto_complete_config
  EXECUTE       (bid, rid, base, total, requests)
                request = (id, correlation_id, flags, timeout_us, parameters: dict,
                           requested_output_names: tuple | None, inputs: (tdesc, ...))
  CANCEL        (bid, index)
  BLS_RESULT    (call_id, final, response: rdesc, rid, base, total)
                rdesc = (error: (code, msg) | None, parameters: dict, outputs: (tdesc, ...))
  CALL_RESULT   (call_id, error: (code, msg) | None, value)
  ACK           ()                          nothing but frees
  FINALIZE      ()
stub -> parent
  INIT_DONE     (error: str | None, info: dict)
  AUTO_COMPLETE_DONE (error: str | None, config_json: str | None, primed: bool)
                primed: the model has no auto_complete_config, so this stub ran no user
                code beyond importing model.py and may serve as the first instance's stub
  RESPONSES     (bid, t_start, t_end, error: str | None, responses, rid, base, total)
                responses = (rdesc | None per request)   [None: released for rescheduling]
  RESPONSE      (bid, index, final, rdesc | None, rid, base, total)
  EXEC_DONE     (bid, t_start, t_end, error: str | None, rescheduled: (index, ...))
  BLS           (call_id, decoupled, model_name, model_version, request, rid, base, total)
  CALL          (call_id, op: str, args: tuple)
  LOG           (level: int, message, filename, lineno)
  FINALIZE_DONE ()
both ways
  REGION        (rid, size)                 + the region's fd (SCM_RIGHTS)
  LARGE         (rid, offset, nbytes)       the real message, too big for a packet, in shm
"""

from __future__ import annotations

import array
import marshal
import socket
from typing import Any, Callable

from .shm import Arena, PeerRegions, Region

# ----------------------------------------------------------------------- commands --

INIT = 1
AUTO_COMPLETE = 2
EXECUTE = 3
CANCEL = 4
BLS_RESULT = 5
CALL_RESULT = 6
ACK = 7
FINALIZE = 8

INIT_DONE = 20
AUTO_COMPLETE_DONE = 21
RESPONSES = 22
RESPONSE = 23
EXEC_DONE = 24
BLS = 25
CALL = 26
LOG = 27
FINALIZE_DONE = 28

REGION = 40
LARGE = 41

#: Command -> (name, field names after `frees`). The closed set; nothing else is sent.
COMMANDS: dict[int, tuple[str, tuple[str, ...]]] = {
    INIT: ("INIT", ("config",)),
    AUTO_COMPLETE: ("AUTO_COMPLETE", ("config",)),
    EXECUTE: ("EXECUTE", ("bid", "rid", "base", "total", "requests")),
    CANCEL: ("CANCEL", ("bid", "index")),
    BLS_RESULT: ("BLS_RESULT", ("call_id", "final", "response", "rid", "base", "total")),
    CALL_RESULT: ("CALL_RESULT", ("call_id", "error", "value")),
    ACK: ("ACK", ()),
    FINALIZE: ("FINALIZE", ()),
    INIT_DONE: ("INIT_DONE", ("error", "info")),
    AUTO_COMPLETE_DONE: ("AUTO_COMPLETE_DONE", ("error", "config_json", "primed")),
    RESPONSES: ("RESPONSES", ("bid", "t_start", "t_end", "error", "responses", "rid", "base", "total")),
    RESPONSE: ("RESPONSE", ("bid", "index", "final", "response", "rid", "base", "total")),
    EXEC_DONE: ("EXEC_DONE", ("bid", "t_start", "t_end", "error", "rescheduled")),
    BLS: ("BLS", ("call_id", "decoupled", "model_name", "model_version", "request", "rid", "base", "total")),
    CALL: ("CALL", ("call_id", "op", "args")),
    LOG: ("LOG", ("level", "message", "filename", "lineno")),
    FINALIZE_DONE: ("FINALIZE_DONE", ()),
    REGION: ("REGION", ("rid", "size")),
    LARGE: ("LARGE", ("rid", "offset", "nbytes")),
}

# A packet larger than this goes through shared memory (LARGE). Well under the kernel's
# per-datagram limit, which is bounded by the socket send buffer (~208 KiB by default).
MAX_PACKET = 64 << 10
_MAX_FDS = 16
_ANCBUF = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
_SOCKBUF = 1 << 20
# Plain ints: socket's IntFlag members are slow to combine on the hot path.
_RECV_FLAGS = int(socket.MSG_CMSG_CLOEXEC)
_TRUNCATED = int(socket.MSG_TRUNC) | int(socket.MSG_CTRUNC)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)

#: Log levels in LOG messages (pb_utils.Logger.LogLevel values).
LOG_INFO, LOG_WARNING, LOG_ERROR, LOG_VERBOSE = 0, 1, 2, 3


class ProtocolError(Exception):
    """The peer sent something that is not a message of this protocol."""


def encode(cmd: int, frees: tuple | list, *fields: Any) -> bytes:
    return marshal.dumps((cmd, tuple(frees), *fields))


def decode(data: bytes | memoryview) -> tuple:
    try:
        msg = marshal.loads(data)
    except (EOFError, ValueError, TypeError) as exc:
        raise ProtocolError(f"undecodable control message: {exc}") from None
    if type(msg) is not tuple or len(msg) < 2 or msg[0] not in COMMANDS:
        raise ProtocolError(f"unknown control message {str(msg)[:80]}")
    if len(msg) != 2 + len(COMMANDS[msg[0]][1]):
        raise ProtocolError(f"malformed {COMMANDS[msg[0]][0]} message ({len(msg)} items)")
    return msg


def describe(msg: tuple) -> dict[str, Any]:
    """A message as a dict of its named fields (for logs and tests)."""
    name, fields = COMMANDS[msg[0]]
    return {"cmd": name, "frees": msg[1], **dict(zip(fields, msg[2:]))}


def socketpair() -> tuple[socket.socket, socket.socket]:
    """(parent end, stub end); the stub end is made inheritable by the launcher."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, _SOCKBUF)
            except OSError:
                pass
    return a, b


class Endpoint:
    """One side of the channel: frames packets, moves region fds, applies and carries frees.

    Not thread-safe by itself: the parent uses it from the event loop only; the stub
    serialises its use with a lock. `blocking` selects how a full socket is handled:
    the stub blocks; the parent queues in `outbox` and calls `on_backpressure` so the
    owner can wait for the socket to drain (`flush`).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        prefix: str,
        region_size: int,
        first_region_size: int | None = None,
        blocking: bool,
        on_backpressure: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self.blocking = blocking
        sock.setblocking(blocking)
        self.arena = Arena(
            prefix,
            region_size=region_size,
            first_region_size=first_region_size,
            on_new_region=self._announce,
        )
        self.peer = PeerRegions()
        self.frees: list[int] = []  # peer-arena allocations we are done with
        self.free_bytes = 0  # ... and their size, as far as the owner of `frees` counts it
        self.outbox: list[tuple[bytes, list[int]]] = []
        self.on_backpressure = on_backpressure
        self.sent = 0  # packets, for tests and benchmarks (one per batch each way)
        self.received = 0
        self._buf = bytearray(MAX_PACKET + 4096)
        self._bufs = [memoryview(self._buf)]
        self.closed = False

    # ------------------------------------------------------------------ sending --

    def take_frees(self) -> tuple:
        if not self.frees:
            return ()
        frees, self.frees = tuple(self.frees), []
        self.free_bytes = 0
        return frees

    def send(self, cmd: int, *fields: Any) -> None:
        self.send_packet(marshal.dumps((cmd, self.take_frees(), *fields)))

    def send_packet(self, data: bytes, fds: list[int] | None = None) -> None:
        if len(data) > MAX_PACKET:
            region, off = self.arena.alloc(len(data))
            region.view[off : off + len(data)] = data
            data = marshal.dumps((LARGE, (), region.id, off, len(data)))
        if self.outbox:
            self.outbox.append((data, fds or []))
            return
        try:
            self._send_now(data, fds)
        except BlockingIOError:
            self.outbox.append((data, fds or []))
            if self.on_backpressure is not None:
                self.on_backpressure()
            return
        self.sent += 1

    def _send_now(self, data: bytes, fds: list[int] | None) -> None:
        """One packet, with `fds` passed along (SCM_RIGHTS) when there are any."""
        if fds:
            self.sock.sendmsg([data], [(_SOL_SOCKET, _SCM_RIGHTS, array.array("i", fds))])
        else:
            self.sock.send(data)

    def flush(self) -> bool:
        """Send what the outbox holds; True once it is empty (non-blocking side only)."""
        while self.outbox:
            data, fds = self.outbox[0]
            try:
                self._send_now(data, fds)
            except BlockingIOError:
                return False
            self.outbox.pop(0)
            self.sent += 1
        return True

    def _announce(self, region: Region) -> None:
        self.send_packet(marshal.dumps((REGION, (), region.id, region.size)), [region.fd])

    # ---------------------------------------------------------------- receiving --

    def recv(self, flags: int = 0) -> tuple | None:
        """Receive and decode one message; None on EOF (the peer is gone).

        REGION messages are handled here (and returned, for the caller to ignore);
        LARGE ones are unwrapped. Raises BlockingIOError when nothing is waiting on a
        non-blocking socket (or with MSG_DONTWAIT).
        """
        packet = self.recv_packet(flags)
        return None if packet is None else self.take(*packet)

    def recv_packet(self, flags: int = 0) -> tuple[int, list] | None:
        """Read one packet into the receive buffer: (nbytes, ancdata), or None on EOF.

        Split from `take` so a threaded side can block here without holding the lock
        that guards the arena (`take` frees into it).
        """
        nbytes, ancdata, msg_flags, _ = self.sock.recvmsg_into(self._bufs, _ANCBUF, flags | _RECV_FLAGS)
        if nbytes == 0 and not ancdata:
            return None
        if msg_flags & _TRUNCATED:
            raise ProtocolError("control message truncated")
        self.received += 1
        return nbytes, ancdata

    def take(self, nbytes: int, ancdata: list) -> tuple:
        """Decode the packet in the receive buffer; apply its frees to our arena."""
        msg = decode(self._bufs[0][:nbytes])
        if ancdata:
            fds = _fds_from(ancdata)
            if msg[0] != REGION or len(fds) != 1:
                for fd in fds:
                    _close_quietly(fd)
                raise ProtocolError("file descriptors on a message that is not REGION")
            self.peer.attach(msg[2], msg[3], fds[0])
            return msg
        if msg[0] == LARGE:
            _, _, rid, off, n = msg
            region = self.peer[rid]
            msg = decode(bytes(region.view[off : off + n]))
            self.frees.append(rid)
        for rid in msg[1]:
            self.arena.free(rid)
        return msg

    # ------------------------------------------------------------------ closing --

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        self.peer.close()
        self.arena.close()


def _fds_from(ancdata: list) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            usable = len(data) - len(data) % arr.itemsize
            arr.frombytes(data[:usable])
            fds.extend(arr)
    return fds


def _close_quietly(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass
