"""`geopera` command line: `serve`, `admin ...`, `download`, `jobs logs`, `mcp` (and `worker`, see src/worker).

Every flag has a `GEOPERA_*` environment variable (see server/config.py).
`geopera admin` talks to the same database as the server: the URL from
`--database-url`/`GEOPERA_DATABASE_URL`, or the embedded PostgreSQL under
`--home`/`GEOPERA_HOME` (started on demand, shared with a running server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from geopera_kernel.raster.logs import configure_logging
from geopera_kernel.server.auth import DEFAULT_SCOPES, SCOPES
from geopera_kernel.server.config import Settings
from geopera_kernel.server.errors import DomainError

if TYPE_CHECKING:
    from geopera_kernel.server.services import Services


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "listen", None):
        settings.listen = args.listen
    if getattr(args, "http_listen", None):
        settings.http_listen = args.http_listen
    if args.database_url:
        settings.database_url = args.database_url
    if args.home:
        settings.home = Path(args.home)
    if getattr(args, "port_file", None):
        settings.port_file = Path(args.port_file)
    if getattr(args, "log_level", None):
        settings.log_level = args.log_level
    if getattr(args, "tls_cert", None):
        settings.tls_cert = Path(args.tls_cert)
    if getattr(args, "tls_key", None):
        settings.tls_key = Path(args.tls_key)
    if getattr(args, "insecure", False):
        settings.insecure = True
    return settings


def _cmd_serve(args: argparse.Namespace) -> int:
    from geopera_kernel.raster.tracing import configure_tracing, shutdown_tracing
    from geopera_kernel.server.allocator import reuse_large_buffers
    from geopera_kernel.server.app import serve
    from geopera_kernel.server.listen import ListenError
    from geopera_kernel.server.rest.metrics import METRICS_MODES
    from geopera_kernel.server.signing import parse_signing_keys

    settings = _settings(args)
    try:
        parse_signing_keys(settings.signing_keys)  # before anything starts: one line, exit 1
        if settings.metrics not in METRICS_MODES:
            raise ValueError(f"GEOPERA_METRICS must be one of {', '.join(METRICS_MODES)}, not {settings.metrics!r}")
        configure_tracing("geopera-server")  # OTEL_* variables; nothing when no exporter is named
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    reuse_large_buffers()
    on_ready = None
    local_worker = None
    if args.demo:
        # The README's webhook example posts to a receiver on this machine.
        settings.webhooks_allow_private = True
        from geopera_kernel.server.demo import (
            LocalWorker,
            bootstrap_demo,
            demo_ca_file,
            demo_worker_token,
            quickstart_text,
            token_facts,
        )

        async def on_ready(services: Services, port: int) -> None:
            nonlocal local_worker
            token = await bootstrap_demo(services, settings.home / "demo-token")
            host = settings.listen.rsplit(":", 1)[0]
            worker_token = await demo_worker_token(services, settings.home / "worker-token")
            ca_file = demo_ca_file(settings)
            local_worker = LocalWorker(f"{host}:{port}", worker_token, settings.home, ca_file)
            local_worker.start()
            grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
            available, scopes = await token_facts(services, token)
            banner = quickstart_text(
                token, f"{host}:{port}", grpcurl, ca_file, available=available, scopes=scopes,
                http_url=services.public_url if settings.http_listen not in ("", "off") else "",
            )  # fmt: skip
            print(banner, flush=True)

    try:
        asyncio.run(serve(settings, on_ready=on_ready))
    except KeyboardInterrupt:
        pass
    except ListenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if local_worker is not None:
            local_worker.stop()
        shutdown_tracing()
    return 0


async def _admin(args: argparse.Namespace) -> object:
    from geopera_kernel.server.app import build_services, database_url

    settings = _settings(args)
    url = await asyncio.to_thread(database_url, settings)
    services = await build_services(settings, url)
    try:
        match (args.admin_group, args.admin_action):
            case ("project", "create"):
                project = await services.catalog.create_project(args.project_id, args.display_name or "")
                return {"project_id": project.id, "display_name": project.display_name}
            case ("project", "list"):
                from geopera_kernel.server.demo import SYSTEM

                projects, _ = await services.catalog.list_projects(SYSTEM, 1000, "")
                return [{"project_id": p.id, "display_name": p.display_name} for p in projects]
            case ("token", "create"):
                scopes = args.scope or list(DEFAULT_SCOPES[args.kind])
                job_types = sorted(set(args.job_type or []))
                token_id, token = await services.tokens.create_token(
                    name=args.name, kind=args.kind, scopes=scopes, project_ids=args.project or [],
                    job_type_ids=job_types,
                )  # fmt: skip
                created = {"token_id": token_id, "token": token, "kind": args.kind, "scopes": sorted(set(scopes))}
                return {**created, "job_type_ids": job_types} if args.kind == "worker" else created
            case ("token", "revoke"):
                if not await services.tokens.revoke(args.token_id):
                    raise ValueError(f"no live token with id {args.token_id!r}")
                return {"token_id": args.token_id, "revoked": True}
            case ("token", "list"):
                from geopera_kernel.server.store import Q

                async with services.db.connection() as conn:
                    rows = await (await conn.execute(Q.list_tokens)).fetchall()
                return [
                    {
                        **r,
                        "create_time": r["create_time"].isoformat(),
                        "revoke_time": r["revoke_time"].isoformat() if r["revoke_time"] else None,
                    }
                    for r in rows
                ]
            case ("credits", "grant"):
                row = await services.credits.grant(args.project_id, args.amount, args.note or "admin grant")
                return {"project_id": row.project_id, "granted": row.amount, "available": row.available_after}
            case ("project", "set-quota"):
                return await _set_quota(services, args.project_id, args.quota_bytes)
            case ("storage", "sweep"):
                from geopera_kernel.server.app import storage_sweeper
                from geopera_kernel.server.config import parse_duration

                grace = parse_duration(args.grace) if args.grace else None
                return (await storage_sweeper(settings, services).sweep(grace)).to_json()
            case ("credits", "balance"):
                from geopera_kernel.server.demo import SYSTEM

                balance = await services.credits.balance(SYSTEM, args.project_id)
                return balance.__dict__
        raise SystemExit(f"unknown admin command {args.admin_group} {args.admin_action}")
    finally:
        await services.db.close()


async def _set_quota(services: Services, project_id: str, quota: str) -> object:
    from geopera_kernel.server.store import Q

    quota_bytes = None if quota == "default" else int(quota)
    if quota_bytes is not None and quota_bytes < 0:
        raise ValueError("the quota is a number of bytes >= 0, or 'default'")
    async with services.db.connection() as conn:
        row = await (
            await conn.execute(Q.set_project_quota, {"project_id": project_id, "quota_bytes": quota_bytes})
        ).fetchone()
    if row is None:
        raise ValueError(f"no project {project_id!r}")
    return {"project_id": project_id, "storage_quota_bytes": quota_bytes}


def _cmd_admin(args: argparse.Namespace) -> int:
    configure_logging("WARNING")
    try:
        result = asyncio.run(_admin(args))
    except DomainError as err:
        print(f"error: {err.reason}: {err.message}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    return _run_worker(args.worker_args)


def _run_worker(worker_args: list[str]) -> int:
    # The worker is its own program (it never imports the server, nor the server it):
    # this process becomes `python -m geopera_kernel.worker`, so signals and the exit code are the worker's.
    os.execv(sys.executable, [sys.executable, "-m", "geopera_kernel.worker", *worker_args])


def _cmd_download(args: argparse.Namespace) -> int:
    from geopera_kernel.server.download_cli import main as download_main

    return download_main(args)


def _cmd_mcp(args: argparse.Namespace) -> int:
    from geopera_kernel.server.mcp import main as mcp_main

    return mcp_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geopera", description="Geopera kernel")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="PostgreSQL URL [GEOPERA_DATABASE_URL]; default: embedded")
    common.add_argument("--home", help="state directory [GEOPERA_HOME, ./var]")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the gRPC server")
    serve.add_argument("--listen", help="host:port [GEOPERA_LISTEN, 127.0.0.1:50051]; port 0 picks one")
    serve.add_argument("--http-listen", help="HTTP/JSON host:port [GEOPERA_HTTP_LISTEN, 127.0.0.1:8080]; off disables")
    serve.add_argument("--port-file", help="write the bound port here once ready")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING [GEOPERA_LOG_LEVEL]")
    serve.add_argument("--demo", action="store_true", help="bootstrap the demo project, token and items")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve gRPC and HTTP over TLS [GEOPERA_TLS_CERT]")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert [GEOPERA_TLS_KEY]")
    serve.add_argument("--insecure", action="store_true",
                       help="allow plaintext on an address beyond loopback [GEOPERA_INSECURE=1]")  # fmt: skip
    serve.set_defaults(func=_cmd_serve)

    admin = sub.add_parser("admin", help="administer projects, tokens and credits")
    groups = admin.add_subparsers(dest="admin_group", required=True)

    project = groups.add_parser("project", help="projects").add_subparsers(dest="admin_action", required=True)
    create = project.add_parser("create", parents=[common], help="create a project")
    create.add_argument("project_id")
    create.add_argument("--display-name")
    project.add_parser("list", parents=[common], help="list projects")
    quota = project.add_parser("set-quota", parents=[common], help="set a project's storage quota")
    quota.add_argument("project_id")
    quota.add_argument("quota_bytes", help="bytes, or 'default' for the server's [GEOPERA_PROJECT_QUOTA_BYTES]")

    token = groups.add_parser("token", help="tokens").add_subparsers(dest="admin_action", required=True)
    tcreate = token.add_parser("create", parents=[common], help="create a token (printed once)")
    tcreate.add_argument("--name", default="")
    tcreate.add_argument("--kind", choices=["user", "admin", "worker"], default="user")
    tcreate.add_argument("--scope", action="append", choices=SCOPES,
                         help="repeat; default: every user scope (user), admin (admin), worker (worker)")  # fmt: skip
    tcreate.add_argument("--project", action="append",
                         help="project membership; repeat (a worker token limited to projects claims only "
                         "their jobs; without any it claims every project's)")  # fmt: skip
    tcreate.add_argument("--job-type", action="append",
                         help="worker tokens: a job type its workers may declare and run; repeat")  # fmt: skip
    token.add_parser("list", parents=[common], help="list tokens (never the secrets)")
    revoke = token.add_parser("revoke", parents=[common], help="revoke a token by its id (see token list)")
    revoke.add_argument("token_id")

    storage = groups.add_parser("storage", help="stored files").add_subparsers(dest="admin_action", required=True)
    sweep = storage.add_parser(
        "sweep",
        parents=[common],
        help="remove expired artifacts, unreferenced objects and stale scratch now; prints what it removed",
    )
    sweep.add_argument("--grace", help="minimum age of what is removed, e.g. 30m [GEOPERA_STORAGE_GRACE, 1h]")

    credits = groups.add_parser("credits", help="credits").add_subparsers(dest="admin_action", required=True)
    grant = credits.add_parser("grant", parents=[common], help="add credits to a project")
    grant.add_argument("project_id")
    grant.add_argument("amount", type=int)
    grant.add_argument("--note")
    balance = credits.add_parser("balance", parents=[common], help="show a project's balance")
    balance.add_argument("project_id")
    admin.set_defaults(func=_cmd_admin)

    worker = sub.add_parser("worker", help="run a worker process")
    worker.add_argument("worker_args", nargs=argparse.REMAINDER)
    worker.set_defaults(func=_cmd_worker)

    from geopera_kernel.server.download_cli import add_arguments as add_download_arguments

    download = sub.add_parser(
        "download",
        help="download an item asset or an analytics artifact (sha256 verified) from a kernel over gRPC",
        description="Writes an item asset or an analytics artifact to a file (or stdout with -o -) through "
        "DownloadAsset, resuming a dropped stream, and verifies its size and SHA-256. Exit status: 0 done, "
        "1 refused, unreachable or not verified, 2 bad arguments or an unwritable output.",
    )
    add_download_arguments(download)
    download.set_defaults(func=_cmd_download)

    from geopera_kernel.server.jobs_cli import add_parser as add_jobs_parser

    add_jobs_parser(sub)

    from geopera_kernel.server.mcp import add_arguments as add_mcp_arguments

    mcp = sub.add_parser("mcp", help="serve the operations as MCP tools over stdio (calls a kernel over gRPC)")
    add_mcp_arguments(mcp)
    mcp.set_defaults(func=_cmd_mcp)
    return parser


def main(argv: list[str] | None = None) -> int:
    # gRPC core logs fork notices at INFO when the server starts the demo
    # worker; only its errors belong on a user's terminal.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        # Its flags are the worker's own: argparse's REMAINDER refuses a first one that
        # looks like an option (`geopera worker --server ...` failed "unrecognized arguments").
        return _run_worker(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
