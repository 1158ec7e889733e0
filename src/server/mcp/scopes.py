"""Which scopes the caller's token holds, so the tool list shows only what the
caller may run. A discovery is any `ScopeDiscovery`: it answers the set of
scopes, or None when it cannot tell; then every tool is listed and the kernel
refuses what the token may not do (PERMISSION_DENIED becomes a tool error).

The default asks the kernel's `auth.whoami` (needs no scope) for the token's
own scopes. The listing is a courtesy, never the access check: a hidden tool
can still be called and the kernel decides.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from geopera.v1 import auth_pb2
from geopera_kernel.server.api.registry import OperationRegistry
from geopera_kernel.server.auth import ANY_SCOPE
from geopera_kernel.server.mcp.kernel import Kernel, KernelError

log = logging.getLogger(__name__)

ScopeDiscovery = Callable[[Kernel, OperationRegistry], Awaitable[frozenset[str] | None]]

WHOAMI_OPERATION = "auth.whoami"
ADMIN_SCOPE = "admin"
_DISCOVERY_TIMEOUT = 10.0


def allows(scopes: frozenset[str] | None, scope: str) -> bool:
    """Whether a principal with `scopes` (None: unknown) may use `scope`; as on
    the server, `admin` holds every scope and `ANY_SCOPE` needs none."""
    return scope == ANY_SCOPE or scopes is None or scope in scopes or ADMIN_SCOPE in scopes


async def discover_scopes(kernel: Kernel, registry: OperationRegistry) -> frozenset[str] | None:
    """The scopes `auth.whoami` reports; None when it cannot answer (a kernel
    without the operation, no or a bad token, the kernel unreachable)."""
    operation = registry.get(WHOAMI_OPERATION)
    if operation is None:
        return None
    try:
        result = await kernel.execute(operation, operation.params_type(), time_budget=_DISCOVERY_TIMEOUT, retry=False)
    except KernelError as err:
        log.warning("%s failed (%s %s): listing every tool", WHOAMI_OPERATION, err.code, err.reason)
        return None
    if not isinstance(result, auth_pb2.AuthWhoamiResult):  # the registry's result type: always
        return None
    return frozenset(result.scopes)


async def every_scope(kernel: Kernel, registry: OperationRegistry) -> frozenset[str] | None:
    """A discovery that never asks: every tool is listed."""
    return None
