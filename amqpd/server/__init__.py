"""The I/O side: listeners, the socket driver and the broker's lifecycle."""
