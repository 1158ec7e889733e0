"""PostgreSQL store: connection pool, migrations, named queries."""

from server.store.database import Database, connect_database, migrate
from server.store.queries import Q

__all__ = ["Q", "Database", "connect_database", "migrate"]
