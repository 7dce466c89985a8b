"""naiad's microkernel: event loop, config, supervisor, bus, lifecycle and shutdown."""
