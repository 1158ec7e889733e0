"""The bundle of domain services handlers run against (built in server.app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.auth import TokenService
from server.domain.analytics import AnalyticsService
from server.domain.catalog import CatalogService
from server.domain.credits import CreditService
from server.domain.idempotency import KEY_TTL_SECONDS
from server.domain.jobs import JobService, Notifications
from server.domain.lineage import LineageService
from server.domain.outputs import OutputService
from server.domain.streams import StreamLimiter
from server.storage import LocalStorage
from server.store import Database


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
