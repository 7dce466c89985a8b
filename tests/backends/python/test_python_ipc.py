"""The control channel (ipc) and the shared-memory arena (shm), without a stub process."""

from __future__ import annotations

import os
import socket

import pytest

from naiad.backends.python import ipc, shm

# One sample per command, in the field layouts documented in ipc.py.
TDESC = ("INPUT0", "FP32", (1, 1024), 0, 4096)
RDESC = (None, {"k": 1}, (TDESC,))
SAMPLES = {
    ipc.INIT: ({"model_path": "/m/1/model.py", "args": {"model_name": "m"}, "decoupled": False},),
    ipc.AUTO_COMPLETE: ({"config_json": "{}"},),
    ipc.EXECUTE: (7, 0, 128, 4096, (("id", 0, 3, 0, {"p": True}, None, (TDESC,)),)),
    ipc.CANCEL: (7, 0),
    ipc.BLS_RESULT: (3, True, RDESC, 1, 0, 4096),
    ipc.CALL_RESULT: (4, (2, "not found"), None),
    ipc.ACK: (),
    ipc.FINALIZE: (),
    ipc.INIT_DONE: (None, {"is_async": False}),
    ipc.AUTO_COMPLETE_DONE: ("boom", None, False),
    ipc.RESPONSES: (7, 10, 20, None, (RDESC, None), 0, 64, 4096),
    ipc.RESPONSE: (7, 1, False, RDESC, 0, 0, 4096),
    ipc.EXEC_DONE: (7, 10, 20, "error text", (1, 3)),
    ipc.BLS: (3, True, "other", -1, ("", "corr", 0, 0, {}, ("OUT",), (TDESC,)), 0, 0, 4096),
    ipc.CALL: (4, "is_model_ready", ("m", "")),
    ipc.LOG: (ipc.LOG_INFO, "hello", "/m/1/model.py", 12),
    ipc.FINALIZE_DONE: (),
    ipc.REGION: (0, 1 << 20),
    ipc.LARGE: (0, 0, 100000),
}


def test_every_command_has_a_sample() -> None:
    assert set(SAMPLES) == set(ipc.COMMANDS)


@pytest.mark.parametrize("cmd", sorted(SAMPLES))
def test_encode_decode_round_trip(cmd: int) -> None:
    fields = SAMPLES[cmd]
    msg = ipc.decode(ipc.encode(cmd, [5, 6], *fields))
    assert msg == (cmd, (5, 6), *fields)
    described = ipc.describe(msg)
    assert described["cmd"] == ipc.COMMANDS[cmd][0]
    assert list(described)[2:] == list(ipc.COMMANDS[cmd][1])


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ipc.ProtocolError):
        ipc.decode(b"\x00\x01garbage")
    with pytest.raises(ipc.ProtocolError):
        ipc.decode(ipc.encode(999, ()))
    with pytest.raises(ipc.ProtocolError):
        ipc.decode(ipc.encode(ipc.CANCEL, (), 1))  # a field short


def _pair(region_size: int = 1 << 16) -> tuple[ipc.Endpoint, ipc.Endpoint]:
    a, b = ipc.socketpair()
    left = ipc.Endpoint(a, prefix="naiad-test-left", region_size=region_size, blocking=True)
    right = ipc.Endpoint(b, prefix="naiad-test-right", region_size=region_size, blocking=True)
    return left, right


def _recv_skipping_regions(ep: ipc.Endpoint) -> tuple:
    while True:
        msg = ep.recv()
        if msg[0] != ipc.REGION:
            return msg


def test_endpoint_regions_frees_and_large_messages() -> None:
    left, right = _pair()
    try:
        # data in left's arena, announced to right with its fd
        region, off = left.arena.alloc(100)
        region.view[off : off + 5] = b"hello"
        left.send(ipc.CANCEL, region.id, off)
        msg = _recv_skipping_regions(right)
        assert bytes(right.peer[msg[2]].view[msg[3] : msg[3] + 5]) == b"hello"
        # the peer writes into our region and we see it (shared mapping)
        right.peer[msg[2]].view[msg[3] : msg[3] + 5] = b"HELLO"
        assert bytes(region.view[off : off + 5]) == b"HELLO"
        # frees ride on the next message back
        assert left.arena.live == 1
        right.frees.append(region.id)
        right.send(ipc.ACK)
        assert left.recv()[0] == ipc.ACK
        assert left.arena.live == 0
        # a message larger than a packet travels through shared memory
        big = "x" * (ipc.MAX_PACKET * 2)
        left.send(ipc.LOG, 0, big, "f.py", 1)
        msg = _recv_skipping_regions(right)
        assert msg[0] == ipc.LOG and msg[3] == big
        assert right.frees  # ... and its block is returned with the next message
        right.send(ipc.ACK)
        left.recv()
        assert left.arena.live == 0
        assert left.sent == right.received
    finally:
        left.close()
        right.close()


def test_endpoint_eof() -> None:
    left, right = _pair()
    right.close()
    assert left.recv() is None
    left.close()


def test_nonblocking_endpoint_queues_when_full() -> None:
    a, b = ipc.socketpair()
    ep = ipc.Endpoint(a, prefix="naiad-test", region_size=1 << 16, blocking=False, on_backpressure=lambda: None)
    try:
        payload = "y" * 30000
        sent = 0
        while not ep.outbox:
            ep.send(ipc.LOG, 0, payload, "", 0)
            sent += 1
            assert sent < 10000
        queued = len(ep.outbox)
        b.setblocking(False)
        got = 0
        while True:
            try:
                if b.recv(1 << 17):
                    got += 1
            except BlockingIOError:
                if ep.flush():
                    break
        while True:
            try:
                b.recv(1 << 17)
                got += 1
            except BlockingIOError:
                break
        assert got == sent and queued >= 1
    finally:
        ep.close()
        b.close()


def test_arena_bump_reset_and_growth() -> None:
    announced = []
    arena = shm.Arena("naiad-test-arena", region_size=1 << 16, on_new_region=announced.append)
    try:
        r1, o1 = arena.alloc(10)
        r2, o2 = arena.alloc(100)
        assert r1 is r2 and o1 == 0 and o2 == shm.ALIGN
        arena.free(r1.id)
        arena.free(r2.id)
        r3, o3 = arena.alloc(10)
        assert r3 is r1 and o3 == 0  # an idle region starts again at 0
        # fill it: the next allocation goes to a new region
        r4, _ = arena.alloc((1 << 16) - 32)  # rounds up to the full region size
        assert r4 is not r1 and len(announced) == 2
        # a tensor bigger than a region gets a region of its own
        big, off = arena.alloc(5 << 20)
        assert big.size >= 5 << 20 and off == 0
        assert arena.live == 3
        for r in (r3, r4, big):
            arena.free(r.id)
        assert arena.live == 0
    finally:
        arena.close()


def test_memfd_regions_are_not_in_dev_shm() -> None:
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    arena = shm.Arena("naiad-test-devshm", region_size=1 << 16)
    region, _ = arena.alloc(10)
    maps = open("/proc/self/maps").read()
    assert "/memfd:naiad-test-devshm-" in maps
    after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert before == after
    arena.close()
    assert "/memfd:naiad-test-devshm-" not in open("/proc/self/maps").read()


def test_socketpair_is_seqpacket() -> None:
    a, b = ipc.socketpair()
    try:
        assert a.type == socket.SOCK_SEQPACKET
        a.send(b"one")
        a.send(b"two")
        assert b.recv(100) == b"one" and b.recv(100) == b"two"
    finally:
        a.close()
        b.close()
