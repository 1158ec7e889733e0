"""The bundle of domain services handlers run against (built in geopera_kernel.server.app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from geopera_kernel.server.auth import TokenService
from geopera_kernel.server.domain.analytics import AnalyticsService
from geopera_kernel.server.domain.analytics_jobs import AnalyticsJobs
from geopera_kernel.server.domain.catalog import CatalogService
from geopera_kernel.server.domain.credits import CreditService
from geopera_kernel.server.domain.idempotency import KEY_TTL_SECONDS
from geopera_kernel.server.domain.jobs import JobService, Notifications
from geopera_kernel.server.domain.lineage import LineageService
from geopera_kernel.server.domain.outputs import OutputService
from geopera_kernel.server.domain.streams import StreamLimiter
from geopera_kernel.server.domain.webhooks import WebhookService
from geopera_kernel.server.signing import UrlSigner
from geopera_kernel.server.storage import BlobStorage
from geopera_kernel.server.store import Database


@dataclass
class Services:
    db: Database
    storage: BlobStorage
    tokens: TokenService
    catalog: CatalogService
    credits: CreditService
    jobs: JobService
    outputs: OutputService
    notifications: Notifications
    analytics: AnalyticsService
    # Signs and checks URLs that need no header (assets.sign, tiles, STAC).
    signer: UrlSigner
    streams: StreamLimiter = field(default_factory=StreamLimiter)
    idempotency_key_ttl_seconds: float = KEY_TTL_SECONDS
    # Absolute base of the HTTP projection's URLs (GEOPERA_PUBLIC_URL, else the
    # address the HTTP port bound; "" while unknown or with HTTP off).
    public_url: str = ""
    lineage: LineageService = field(init=False)
    webhooks: WebhookService = field(init=False)
    analytics_jobs: AnalyticsJobs = field(init=False)

    def __post_init__(self) -> None:
        self.lineage = LineageService(self.db)
        self.webhooks = WebhookService(self.db)
        self.analytics_jobs = AnalyticsJobs(self.db, self.jobs, self.analytics)
