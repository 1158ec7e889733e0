"""The bundle of domain services handlers run against (built in geopera_kernel.server.app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from geopera_kernel.server.auth import TokenService
from geopera_kernel.server.domain.analytics import AnalyticsService
from geopera_kernel.server.domain.catalog import CatalogService
from geopera_kernel.server.domain.credits import CreditService
from geopera_kernel.server.domain.idempotency import KEY_TTL_SECONDS
from geopera_kernel.server.domain.jobs import JobService, Notifications
from geopera_kernel.server.domain.lineage import LineageService
from geopera_kernel.server.domain.outputs import OutputService
from geopera_kernel.server.domain.streams import StreamLimiter
from geopera_kernel.server.storage import LocalStorage
from geopera_kernel.server.store import Database


@dataclass
class Services:
    db: Database
    storage: LocalStorage
    tokens: TokenService
    catalog: CatalogService
    credits: CreditService
    jobs: JobService
    outputs: OutputService
    notifications: Notifications
    analytics: AnalyticsService
    streams: StreamLimiter = field(default_factory=StreamLimiter)
    idempotency_key_ttl_seconds: float = KEY_TTL_SECONDS
    lineage: LineageService = field(init=False)

    def __post_init__(self) -> None:
        self.lineage = LineageService(self.db)
