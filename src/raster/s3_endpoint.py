"""GDAL's `/vsis3/` settings derived from the standard `AWS_ENDPOINT_URL`.

boto3 reads `AWS_ENDPOINT_URL`; GDAL does not: it names a custom endpoint as host:port in
`AWS_S3_ENDPOINT` plus `AWS_HTTPS`, and S3-compatible servers want path-style addressing.
Every process that reads stored COGs through `/vsis3/` (the server, a Dask worker running
analytics chunks) derives them here, so GDAL and boto3 never talk to two endpoints.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

GDAL_ENDPOINT_VARIABLES = ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING")


def use_endpoint(endpoint: str) -> None:
    """Point this process's GDAL at ``endpoint`` (``http(s)://host:port``)."""
    parts = urlsplit(endpoint)
    os.environ["AWS_S3_ENDPOINT"] = parts.netloc
    os.environ["AWS_HTTPS"] = "YES" if parts.scheme == "https" else "NO"
    os.environ["AWS_VIRTUAL_HOSTING"] = "FALSE"


def use_endpoint_from_environment() -> None:
    """`use_endpoint` of `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (as boto3) when one is set."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if endpoint:
        use_endpoint(endpoint)
