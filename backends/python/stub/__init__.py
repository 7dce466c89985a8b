"""The stub process: loads one model.py and runs its batches.

    python -m naiad.backends.python.stub --fd N --ppid P --label L

Started by `launcher`, it owns one instance of the user's `TritonPythonModel`. It talks to
the parent over the control socket `--fd` (see `ipc`), reads inputs as numpy views over
the parent's shared-memory regions (no copy) and writes outputs into its own arena.

One job a module:
    process   the process's start: arguments, parent-death signal, binding pb_utils
    serve     the serve loop (INIT, EXECUTE ... FINALIZE) and message dispatch; `Stub`
    channel   who reads the socket (leader/follower), sends, the output arena
    loading   importing model.py, auto-complete, initialize, finalize
    execute   batches: inputs as views, `execute`, responses packed into the arena
    bls       calls to the parent: BLS requests, model control, custom metrics
    wire      tensors in wire layout;  errors: Triton's error texts

Models with `async def execute` run on an asyncio loop in the main thread, which watches
the socket with `add_reader`, so several batches can be in flight.

The stub exits when the parent closes the socket (EOF) and, as a backstop, when the
parent dies (PR_SET_PDEATHSIG); its memfds vanish with it.
"""

# asyncio, inspect, traceback and argparse are imported where needed: a stub's start-up
# time is most of a small model's load time.
