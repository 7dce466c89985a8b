"""The one inference API that every protocol service calls.

It is a contract the kernel hands to services: wire-neutral request and response types
(`types`), Triton's error codes (`errors`), datatypes (`datatypes`), the typed bus
messages that reach the model manager (`messages`), and the interface a backend
implements (`backend`). Protocol services decode into these types, make a bus request,
and encode what comes back; no inference logic lives in a protocol package.
"""
