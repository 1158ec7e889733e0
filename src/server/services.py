"""The bundle of domain services handlers run against (built in server.app)."""

from __future__ import annotations

from dataclasses import dataclass

from server.auth import TokenService
from server.domain.catalog import CatalogService
from server.domain.credits import CreditService
from server.storage import LocalStorage
from server.store import Database


@dataclass
class Services:
    db: Database
    storage: LocalStorage
    tokens: TokenService
    catalog: CatalogService
    credits: CreditService
