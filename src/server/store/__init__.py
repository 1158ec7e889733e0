"""PostgreSQL store: connection pool, migrations, named queries."""

from geopera_kernel.server.store.database import CommitProbe, Database, connect_database, migrate
from geopera_kernel.server.store.queries import Q

__all__ = ["CommitProbe", "Database", "Q", "connect_database", "migrate"]
