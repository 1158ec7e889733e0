"""The server's name for the kernel's error vocabulary.

`DomainError` and its constructors are defined in the shared package
(`geopera_kernel.raster.domain_errors`): the GeoJSON parser and the cost model there raise them
too, in the server and in workers alike. `geopera_kernel.server.edge.status` is still the one
place that turns a `DomainError` into a `google.rpc.Status`.
"""

from geopera_kernel.raster.domain_errors import *  # noqa: F403 (the same objects, under the server's name)
from geopera_kernel.raster.domain_errors import __all__ as __all__
