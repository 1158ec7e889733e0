"""Bearer-token authentication and the principal model.

Tokens are `gpk_` + 43 url-safe characters (256 random bits). Only their
SHA-256 is stored. A principal is what a token resolves to: its kind, scopes
and project memberships. `admin` holds every scope and sees every project.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from geopera_kernel.server import callstats
from geopera_kernel.server.domain.names import JOB_TYPE_ID
from geopera_kernel.server.errors import Code, DomainError, permission_denied, unauthenticated
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.store import Database, Q

SCOPES = (
    "catalog:read",
    "catalog:write",
    "processing:read",
    "processing:process",
    "analytics:read",
    "credits:read",
    "admin",
    "worker",
)
# The registry scope of operations open to every authenticated (non-job) caller.
ANY_SCOPE = ""
USER_SCOPES = tuple(s for s in SCOPES if s not in ("admin", "worker"))
# What each kind of token gets when no scope is named.
DEFAULT_SCOPES = {"user": USER_SCOPES, "admin": ("admin",), "worker": ("worker",)}
TOKEN_PREFIX = "gpk_"
JOB_TOKEN_PREFIX = "gjt_"
# An open stream looks its token up at most this often (when the cache time is shorter).
_REVOCATION_POLL_FLOOR_SECONDS = 0.5

log = logging.getLogger(__name__)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _bearer(authorization: str) -> str | None:
    """The token of `Bearer <token>`, None when the value is not of that form."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass(frozen=True)
class Principal:
    """Who is calling. `id` is the token id (never the token itself)."""

    id: str
    kind: str  # user | admin | worker | job
    scopes: frozenset[str]
    project_ids: frozenset[str] = field(default_factory=frozenset)
    name: str = ""
    # Set for job tokens only: the (job, attempt) the token is bound to.
    job_id: str = ""
    attempt: int = 0
    # For job tokens: the job's source items, the only items it may download.
    source_item_ids: frozenset[str] = field(default_factory=frozenset)
    # For worker tokens: the job types an admin granted, the only ones its
    # workers may declare and run.
    job_type_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def require_scope(self, scope: str) -> None:
        """`scope` "" (ANY_SCOPE) admits every authenticated caller but job tokens."""
        if self.kind == "job":
            raise permission_denied(
                "JOB_TOKEN_NOT_ALLOWED",
                "a job token may only report on and register outputs of its own job",
            )
        if scope == ANY_SCOPE:
            return
        if scope not in self.scopes and not self.is_admin:
            raise permission_denied("MISSING_SCOPE", f"this operation requires scope {scope!r}", required_scope=scope)

    def require_job_type(self, job_type_id: str) -> None:
        """A worker may declare (and so run) only the job types granted to its
        credential; admin tokens may declare any."""
        if job_type_id not in self.job_type_ids and not self.is_admin:
            raise permission_denied(
                "JOB_TYPE_NOT_GRANTED",
                f"this worker credential is not granted job type {job_type_id!r}; an admin grants it with "
                f"`geopera admin token create --kind worker --job-type {job_type_id}`",
                job_type_id=job_type_id,
            )

    def can_access(self, project_id: str) -> bool:
        return self.is_admin or project_id in self.project_ids

    def require_project(self, project_id: str) -> None:
        if not self.can_access(project_id):
            raise permission_denied(
                "PROJECT_ACCESS_DENIED",
                f"the caller is not a member of project {project_id!r}",
                project_id=project_id,
            )


def job_principal(job_id: str, attempt: int, worker_id: str, source_item_ids: Iterable[str]) -> Principal:
    """The caller of a job token: one attempt of one job, on one worker."""
    return Principal(
        id=f"job:{job_id}:{attempt}",
        kind="job",
        scopes=frozenset(),
        name=worker_id,
        job_id=job_id,
        attempt=attempt,
        source_item_ids=frozenset(source_item_ids),
    )


class TokenService:
    """Issues tokens and resolves bearer tokens to principals.

    Resolutions are cached for `cache_seconds` (keyed by the token hash) so the
    hot path does not hit the database on every call; a revoked token stops
    working within that time.
    """

    def __init__(self, db: Database, *, cache_seconds: float = 5.0) -> None:
        self._db = db
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, Principal]] = {}

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal of a well-formed bearer token still in the cache, without
        awaiting (the edge's usual case); None otherwise: `authenticate` decides."""
        token = _bearer(authorization) if authorization else None
        return None if token is None else self._cached(hash_token(token), time.monotonic())

    def _cached(self, token_hash: bytes, now: float) -> Principal | None:
        cached = self._cache.get(token_hash)
        if cached is not None and cached[0] > now:
            callstats.cache_lookup("token", True)
            return cached[1]
        return None

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthenticated("missing `authorization: Bearer <token>` metadata")
        token = _bearer(authorization)
        if token is None:
            raise unauthenticated("the authorization metadata must be `Bearer <token>`")
        token_hash = hash_token(token)
        now = time.monotonic()
        principal = self._cached(token_hash, now)
        if principal is not None:
            return principal
        callstats.cache_lookup("token", False)
        if token.startswith(JOB_TOKEN_PREFIX):
            # What a job token names (job, attempt, worker) never changes, so it
            # may be cached too: every job-token call checks, under the job's
            # row lock, that the attempt is still the live one.
            principal = await self._job_principal(token)
            self._remember(token_hash, principal, now)
            return principal
        async with self._db.connection() as conn:
            cur = await conn.execute(Q.principal_by_token_hash, {"token_hash": token_hash})
            row = await cur.fetchone()
        if row is None:
            raise unauthenticated("unknown or revoked token")
        principal = Principal(
            id=row["id"],
            kind=row["kind"],
            scopes=frozenset(row["scopes"]),
            project_ids=frozenset(row["project_ids"]),
            name=row["name"],
            job_type_ids=frozenset(row["job_type_ids"]),
        )
        self._remember(token_hash, principal, now)
        return principal

    async def wait_revoked(self, authorization: str | None) -> DomainError:
        """Returns once a token that authenticated stops doing so (revoked).
        It is looked up again whenever its cached resolution expires, so an
        open stream learns of a revocation within the cache time."""
        _, _, token = (authorization or "").strip().partition(" ")
        token_hash = hash_token(token.strip())
        while True:
            cached = self._cache.get(token_hash)
            expiry = cached[0] if cached is not None else time.monotonic()
            # Just past the expiry, so the lookup below goes to the database.
            await asyncio.sleep(max(expiry - time.monotonic() + 0.05, _REVOCATION_POLL_FLOOR_SECONDS))
            try:
                await self.authenticate(authorization)
            except DomainError as err:
                if err.code == Code.UNAUTHENTICATED:
                    return DomainError(
                        Code.UNAUTHENTICATED, "TOKEN_REVOKED", "the token of this stream was revoked; the stream ends"
                    )
                log.debug("re-checking a stream's token failed: %s", err)  # not a revocation: ask again
            except Exception:  # the database is unreachable: not a revocation, ask again
                log.debug("re-checking a stream's token failed", exc_info=True)

    def _remember(self, token_hash: bytes, principal: Principal, now: float) -> None:
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token_hash] = (now + self._cache_seconds, principal)

    async def _job_principal(self, token: str) -> Principal:
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.job_token_principal, {"token_hash": hash_token(token)})).fetchone()
        if row is None:
            raise unauthenticated("unknown job token")
        return job_principal(row["job_id"], row["attempt"], row["worker_id"], row["source_item_ids"])

    def remember_job_token(self, token: str, principal: Principal) -> None:
        """A job token this process just issued (and committed): its worker's
        first call need not look it up. What it names never changes."""
        self._remember(hash_token(token), principal, time.monotonic())

    async def revoke(self, token_id: str) -> bool:
        """Revoke a token by id; False when no live token has that id. Other
        server processes stop accepting it within their cache time."""
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.revoke_token, {"id": token_id})).fetchone()
        self._cache.clear()
        return row is not None

    async def create_token(
        self,
        *,
        name: str,
        kind: str,
        scopes: Sequence[str],
        project_ids: Sequence[str],
        job_type_ids: Sequence[str] = (),
    ) -> tuple[str, str]:
        """Create a token; returns (token id, token). The token is shown once.

        A worker token holds scope `worker` only, and `job_type_ids` are the
        job types its workers may declare and run (worker tokens only).
        """
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
        if kind not in DEFAULT_SCOPES:
            raise ValueError(f"unknown token kind {kind!r}; known: {', '.join(DEFAULT_SCOPES)}")
        if kind == "admin":
            scopes = sorted(set(scopes) | {"admin"})
        if kind == "worker":
            if set(scopes) - {"worker"}:
                raise ValueError(f"a worker token has scope 'worker' only, not {sorted(set(scopes) - {'worker'})}")
            scopes = ["worker"]
        if job_type_ids and kind != "worker":
            raise ValueError("job types are granted to worker tokens only (--kind worker)")
        bad = sorted(t for t in set(job_type_ids) if not JOB_TYPE_ID.matches(t))
        if bad:
            raise ValueError(f"invalid job type ids {bad}: each must be {JOB_TYPE_ID.shape}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = new_id("tok")
        async with self._db.transaction() as conn:
            await conn.execute(
                Q.insert_token,
                {
                    "id": token_id,
                    "token_hash": hash_token(token),
                    "name": name,
                    "kind": kind,
                    "scopes": sorted(set(scopes)),
                },
            )
            for project_id in project_ids:
                await conn.execute(Q.insert_token_project, {"token_id": token_id, "project_id": project_id})
            for job_type_id in sorted(set(job_type_ids)):
                await conn.execute(Q.insert_token_job_type, {"token_id": token_id, "job_type_id": job_type_id})
        return token_id, token
