"""The definitions store: vhosts, users, permissions, durable exchanges,
queues and bindings, policies and parameters, kept across restarts.

    async with DefinitionsStore.open(sqlite_url(data_dir)) as store:
        await store.put_vhost(VHost("/"))
        definitions = await store.load()

SQLite in the data directory by default, any SQLAlchemy async URL by
configuration, "memory://" for a store that keeps nothing. export_json and
import_json speak RabbitMQ's definitions file format.
"""

from .memory import MemoryDefinitionsStore
from .model import (
    Binding,
    Definitions,
    Exchange,
    GlobalParameter,
    Parameter,
    Permission,
    Policy,
    Queue,
    TopicPermission,
    User,
    VHost,
)
from .rabbitmq_json import (
    ImportSummary,
    InvalidDefinitions,
    export_json,
    import_json,
    parse_json,
)
from .store import (
    DEFINITIONS_FILE_NAME,
    MEMORY_URL,
    SCHEMA_VERSION,
    BadStoreURL,
    DefinitionsError,
    DefinitionsStore,
    NotFound,
    SchemaTooNew,
    StoreClosed,
    StoreUnavailable,
    check_url,
    sqlite_url,
)
from .values import ByteArray, FieldValue, FrozenTable, thaw, thaw_table

__all__ = [
    "DEFINITIONS_FILE_NAME",
    "MEMORY_URL",
    "SCHEMA_VERSION",
    "BadStoreURL",
    "Binding",
    "ByteArray",
    "Definitions",
    "DefinitionsError",
    "DefinitionsStore",
    "Exchange",
    "FieldValue",
    "FrozenTable",
    "GlobalParameter",
    "ImportSummary",
    "InvalidDefinitions",
    "MemoryDefinitionsStore",
    "NotFound",
    "Parameter",
    "Permission",
    "Policy",
    "Queue",
    "SchemaTooNew",
    "StoreClosed",
    "StoreUnavailable",
    "TopicPermission",
    "User",
    "VHost",
    "check_url",
    "export_json",
    "import_json",
    "parse_json",
    "sqlite_url",
    "thaw",
    "thaw_table",
]
