"""Users, password hashing and SASL mechanisms."""
