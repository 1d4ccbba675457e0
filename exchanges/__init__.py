"""Exchange types: the routing tables behind exchange.declare's ``type``.

Pure, synchronous and free of I/O. The broker looks a type up by name with
:func:`get`, makes one instance per exchange, and drives it through the
:class:`ExchangeType` interface. Plugins add types with :func:`register` or
the ``amqpd.exchanges`` entry-point group.
"""

from .base import BindingError, ExchangeType
from .registry import get, names, register

__all__ = ["BindingError", "ExchangeType", "get", "names", "register"]
