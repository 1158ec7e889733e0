"""`geopera jobs ...`: follow and steer jobs on a running kernel over gRPC.

One module per subcommand, each with `add_arguments(parser)` and
`run(kernel, args) -> int`; SUBCOMMANDS lists them, so a new one (`logs`,
`resubmit`) is one module and one line here. Such a module gets the
connection flags of `geopera download` (`--server --token --tls --ca-file`),
`--json` (the JSON the HTTP projection answers, job statuses as words) and
the shared channel and exit statuses (kernel.py); a module may word `--json`
itself (JSON_HELP).

Exit status, as `geopera download`: 0 done; 1 the kernel refused or could not
be reached (and for `watch`, a job that ended FAILED or CANCELLED); 2 a bad
command line.
"""

from __future__ import annotations

import argparse
from types import ModuleType

from geopera_kernel.server.jobs_cli import cancel, get, listing, logs, resubmit, watch
from geopera_kernel.server.jobs_cli.kernel import run_subcommand
from geopera_kernel.server.remote import add_connection_arguments

# name -> (module, help); the order is `geopera jobs --help`'s.
SUBCOMMANDS: dict[str, tuple[ModuleType, str]] = {
    "list": (listing, "list a project's jobs, newest first"),
    "get": (get, "show one job: status, progress, credits, outputs"),
    "watch": (watch, "follow a job's events until it ends (resumes a dropped stream)"),
    "cancel": (cancel, "cancel a job; its held credits are released"),
    "logs": (logs, "a job's log records, oldest first (--follow: until it ends)"),
    "resubmit": (resubmit, "run a finished job again: same type and inputs, a new hold (--set overrides)"),
}

DESCRIPTION = (
    "Follow and steer jobs on a kernel over gRPC. Exit status: 0 done; 1 the kernel refused or could not be "
    "reached (watch: also a job that ended FAILED or CANCELLED); 2 bad arguments."
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jobs = sub.add_parser("jobs", help="list, show, watch and cancel jobs on a kernel over gRPC",
                          description=DESCRIPTION)  # fmt: skip
    actions = jobs.add_subparsers(dest="jobs_action", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        parser = actions.add_parser(name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}.")
        module.add_arguments(parser)
        json_help = getattr(module, "JSON_HELP", "print JSON (as the HTTP API answers) instead")
        parser.add_argument("--json", action="store_true", help=json_help)
        add_connection_arguments(parser)
        parser.set_defaults(func=run_subcommand(module.run))
