"""Server settings: flags override `GEOPERA_*` environment variables, which
override the defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"
# Memory for items kept encoded for items.get: about 60,000 items of 4 KB.
DEFAULT_ITEM_CACHE_BYTES = 256 << 20


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `12h` or `7d`."""
    text = text.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:]) if text else None
    seconds = float(text[:-1] if unit else text) * (unit or 1)
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"not a duration: {text!r}")
    return seconds


def _env_duration(name: str, default: float) -> float:
    value = os.environ.get(name)
    return parse_duration(value) if value else default


DEFAULT_ANALYTICS_SYNC_MAX_PIXELS = 1_000_000_000


@dataclass
class Settings:
    # host:port to listen on; port 0 picks a free port (see `port_file`).
    listen: str = field(default_factory=lambda: os.environ.get("GEOPERA_LISTEN", DEFAULT_LISTEN))
    # host:port of the HTTP/JSON projection; empty or "off" disables it.
    http_listen: str = field(default_factory=lambda: os.environ.get("GEOPERA_HTTP_LISTEN", DEFAULT_HTTP_LISTEN))
    # PostgreSQL URL; unset means the embedded PostgreSQL under `home`.
    database_url: str | None = field(default_factory=lambda: os.environ.get("GEOPERA_DATABASE_URL") or None)
    # State directory: embedded database, stored assets, uploads.
    home: Path = field(default_factory=lambda: Path(os.environ.get("GEOPERA_HOME", "./var")))
    # Where asset bytes live; defaults to `<home>/storage`.
    storage_dir: Path | None = field(
        default_factory=lambda: Path(p) if (p := os.environ.get("GEOPERA_STORAGE_DIR")) else None
    )
    # `s3://bucket/prefix`: asset bytes in an S3-compatible bucket (endpoint and
    # credentials from the standard AWS_* variables); unset: the local `storage_dir`.
    storage_url: str = field(default_factory=lambda: os.environ.get("GEOPERA_STORAGE_URL", ""))
    # Lifetime of the presigned URLs workers get for their job's sources and outputs.
    presign_ttl_seconds: float = field(default_factory=lambda: _env_duration("GEOPERA_PRESIGN_TTL", 3600.0))
    # When set, the bound port is written here once the server is ready.
    port_file: Path | None = None
    log_level: str = field(default_factory=lambda: os.environ.get("GEOPERA_LOG_LEVEL", "INFO"))
    max_message_bytes: int = field(default_factory=lambda: _env_int("GEOPERA_MAX_MESSAGE_BYTES", 16 << 20))
    max_upload_bytes: int = field(default_factory=lambda: _env_int("GEOPERA_MAX_UPLOAD_BYTES", 4 << 30))
    token_cache_seconds: float = field(default_factory=lambda: _env_float("GEOPERA_TOKEN_CACHE_SECONDS", 5.0))
    db_pool_size: int = field(default_factory=lambda: _env_int("GEOPERA_DB_POOL_SIZE", 16))
    # Memory for items kept encoded in memory for items.get (least recently read
    # evicted first); 0 keeps none.
    item_cache_bytes: int = field(
        default_factory=lambda: _env_int("GEOPERA_ITEM_CACHE_BYTES", DEFAULT_ITEM_CACHE_BYTES)
    )
    # Worker leases: a job whose worker is silent this long is dispatched again.
    lease_seconds: float = field(default_factory=lambda: _env_float("GEOPERA_LEASE_SECONDS", 15.0))
    heartbeat_seconds: float = field(default_factory=lambda: _env_float("GEOPERA_HEARTBEAT_SECONDS", 3.0))
    retry_backoff_seconds: float = field(default_factory=lambda: _env_float("GEOPERA_RETRY_BACKOFF_SECONDS", 1.0))
    # The retry backoff doubles per attempt up to this.
    retry_backoff_max_seconds: float = field(
        default_factory=lambda: _env_float("GEOPERA_RETRY_BACKOFF_MAX_SECONDS", 30.0)
    )
    # How long a spend's idempotency key (and its stored response) is kept.
    idempotency_key_ttl_seconds: float = field(
        default_factory=lambda: _env_duration("GEOPERA_IDEMPOTENCY_KEY_TTL", 48 * 3600.0)
    )
    max_attempts: int = field(default_factory=lambda: _env_int("GEOPERA_MAX_ATTEMPTS", 3))
    # Extra analytics method modules (comma-separated); each exposes METHODS,
    # a list of AnalyticsMethod classes, registered next to the built-ins.
    analytics_plugins: str = field(default_factory=lambda: os.environ.get("GEOPERA_ANALYTICS_PLUGINS", ""))
    shutdown_grace_seconds: float = field(default_factory=lambda: _env_float("GEOPERA_SHUTDOWN_GRACE", 10.0))
    # TLS for both ports (PEM files); unset serves plaintext.
    tls_cert: Path | None = field(default_factory=lambda: _env_path("GEOPERA_TLS_CERT"))
    tls_key: Path | None = field(default_factory=lambda: _env_path("GEOPERA_TLS_KEY"))
    # Serve plaintext on an address beyond loopback (refused otherwise).
    insecure: bool = field(default_factory=lambda: os.environ.get("GEOPERA_INSECURE", "") in ("1", "true"))
    # Secret that signs page tokens (any string; give every replica the same). Unset: a
    # random key generated once and kept in the database.
    page_token_key: str = field(default_factory=lambda: os.environ.get("GEOPERA_PAGE_TOKEN_KEY", ""), repr=False)
    # URL-signing keys, `kid:secret,kid:secret`: the first signs, all verify (rotate by
    # putting a new key first). Unset: one key generated once and kept in the database.
    signing_keys: str = field(default_factory=lambda: os.environ.get("GEOPERA_SIGNING_KEYS", ""), repr=False)
    # Absolute base URL of the HTTP projection as clients reach it (signed URLs are built
    # on it); unset: the address the HTTP port bound.
    public_url: str = field(default_factory=lambda: os.environ.get("GEOPERA_PUBLIC_URL", ""))
    # Storage sweep: stored objects no row names, and scratch files, are removed
    # once older than the grace; analytics artifacts once older than the retention.
    storage_grace_seconds: float = field(default_factory=lambda: _env_duration("GEOPERA_STORAGE_GRACE", 3600.0))
    artifact_retention_seconds: float = field(
        default_factory=lambda: _env_duration("GEOPERA_ARTIFACT_RETENTION", 7 * 86400.0)
    )
    sweep_interval_seconds: float = field(default_factory=lambda: _env_duration("GEOPERA_SWEEP_INTERVAL", 900.0))
    # Who may read /metrics: open (no token, the default), admin (a token with the admin scope) or off.
    metrics: str = field(default_factory=lambda: os.environ.get("GEOPERA_METRICS", "open").strip().lower())
    # Largest analytics.execute call, in pixels read (its `pixels_to_read`): above it the call
    # fails RESOURCE_EXHAUSTED USE_ANALYTICS_JOB and runs as a job (analytics.submit) instead.
    # 0: no limit. The default holds a change detection of four Sentinel-2 tiles.
    analytics_sync_max_pixels: int = field(
        default_factory=lambda: _env_int("GEOPERA_ANALYTICS_SYNC_MAX_PIXELS", DEFAULT_ANALYTICS_SYNC_MAX_PIXELS)
    )
    # Storage quota of a project without its own (`geopera admin project set-quota`).
    project_quota_bytes: int = field(default_factory=lambda: _env_int("GEOPERA_PROJECT_QUOTA_BYTES", 100 << 30))
    # Concurrent WatchJob/UploadAsset/DownloadAsset streams (and HTTP event
    # streams) one token may hold on one server.
    max_streams_per_token: int = field(default_factory=lambda: _env_int("GEOPERA_MAX_STREAMS_PER_TOKEN", 16))
    # Caps of each job's log (records, and bytes of messages and fields): see WriteJobLogs.
    job_log_max_entries: int = field(default_factory=lambda: _env_int("GEOPERA_JOB_LOG_MAX_ENTRIES", 10_000))
    job_log_max_bytes: int = field(default_factory=lambda: _env_int("GEOPERA_JOB_LOG_MAX_BYTES", 4 << 20))
    # A watch that saw no event of its job this long ends (the client resumes it).
    watch_idle_seconds: float = field(default_factory=lambda: _env_duration("GEOPERA_WATCH_IDLE", 600.0))
    # Largest raster opened (items.create, job outputs): width x height, and width x height x
    # bands; checked from the header, before any pixel is decoded (RASTER_TOO_LARGE).
    # 0 keeps raster.RasterLimits' defaults (2^28 pixels, 2^31 pixel values).
    max_raster_pixels: int = field(default_factory=lambda: _env_int("GEOPERA_MAX_RASTER_PIXELS", 0))
    max_raster_samples: int = field(default_factory=lambda: _env_int("GEOPERA_MAX_RASTER_SAMPLES", 0))
    # Threads for inspection, statistics and COG conversion of uploads and job outputs;
    # 0 means one per core, at most 4.
    raster_workers: int = field(default_factory=lambda: _env_int("GEOPERA_RASTER_WORKERS", 0))

    # Webhooks may go to loopback and private addresses (never link-local or
    # reserved ones); off by default (SSRF). `make serve`'s demo turns it on.
    webhooks_allow_private: bool = field(
        default_factory=lambda: os.environ.get("GEOPERA_WEBHOOKS_ALLOW_PRIVATE", "") in ("1", "true")
    )
    # This replica sends webhook messages from the outbox (every replica may).
    webhooks_send: bool = field(default_factory=lambda: os.environ.get("GEOPERA_WEBHOOKS_SEND", "1") in ("1", "true"))
    # One delivery attempt's time limit (connect, send, answer).
    webhooks_timeout_seconds: float = field(default_factory=lambda: _env_duration("GEOPERA_WEBHOOKS_TIMEOUT", 10.0))
    # First retry delay; it doubles per attempt (with jitter) up to an hour,
    # and retries stop once the message is older than the window.
    webhooks_retry_base_seconds: float = field(
        default_factory=lambda: _env_duration("GEOPERA_WEBHOOKS_RETRY_BASE", 5.0)
    )
    webhooks_retry_window_seconds: float = field(
        default_factory=lambda: _env_duration("GEOPERA_WEBHOOKS_RETRY_WINDOW", 86400.0)
    )
    # Consecutive failed attempts after which a hook is disabled.
    webhooks_disable_after: int = field(default_factory=lambda: _env_int("GEOPERA_WEBHOOKS_DISABLE_AFTER", 20))

    @property
    def storage_root(self) -> Path:
        return self.storage_dir or self.home / "storage"
