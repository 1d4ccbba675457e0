"""Optional parts of amqpd, loaded by name from configuration."""
