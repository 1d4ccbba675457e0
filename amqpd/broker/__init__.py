"""The broker model: node, virtual hosts, exchanges, queues, consumers."""
