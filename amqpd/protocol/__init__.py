"""Connection and channel state machines (sans-I/O).

They take bytes, decode frames, call the broker model and produce output
bytes; the server's driver only moves bytes and keeps time. Nothing here
imports anyio.
"""
