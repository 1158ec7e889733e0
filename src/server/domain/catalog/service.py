"""CatalogService: projects, items, assets and uploads, one class over its
parts (each in its module): reads (and the state they share), projects,
search, item creation, uploads, downloads, what tiles draw from."""

from __future__ import annotations

from geopera_kernel.server.domain.catalog.creation import ItemCreation
from geopera_kernel.server.domain.catalog.downloads import CatalogDownloads
from geopera_kernel.server.domain.catalog.projects import CatalogProjects
from geopera_kernel.server.domain.catalog.render_sources import CatalogRenderSources
from geopera_kernel.server.domain.catalog.search import CatalogSearch


class CatalogService(CatalogProjects, CatalogSearch, ItemCreation, CatalogDownloads, CatalogRenderSources):
    pass
