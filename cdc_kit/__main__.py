"""Command line: `python -m cdc_kit <command>`: up, down, status, reset, lab, capture, route,
demo, api, doctor, env, solutions.

Problems a person can fix (port in use, unwritable folder...) are printed as one line starting
with `error:` and exit code 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable

from pydantic import ValidationError

from cdc_kit.config import get_settings
from cdc_kit.errors import FixableError
from cdc_kit.services.process import ServiceStatus
from cdc_kit.stack import Stack, get_stack


def cmd_up(args: argparse.Namespace) -> int:
    stack = get_stack()
    began = time.monotonic()
    started = stack.up(only=args.only)
    took = time.monotonic() - began
    for name, was_started in started.items():
        print(f"{name:<11} {'started' if was_started else 'already running'}")
    print(f"stack ready in {took:.1f} s (state in {stack.settings.home})")
    if "postgres" in started:  # a lab from an older kit gets the seed's unique e-mail
        from cdc_kit import oltp  # here: the other commands need no SQLModel

        with stack.pg_engine().begin() as conn:
            repeated = oltp.make_email_unique(conn)
        if repeated:
            print(f"warning: {oltp.email_warning(repeated)}")
    print_status(stack)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    for name, stopped in get_stack().down().items():
        print(f"{name:<11} {'stopped' if stopped else 'was not running'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Exit code 0 when every service is healthy, 3 otherwise (handy in scripts)."""
    rows = print_status(get_stack())
    return 0 if all(row.healthy for row in rows) else 3


def print_status(stack: Stack) -> list[ServiceStatus]:
    print(f"mode: {stack.settings.mode}   state: {stack.settings.home}")
    rows = stack.status()
    for row in rows:
        pid = str(row.pid) if row.pid else "-"
        detail = f"  ({row.detail})" if row.detail else ""
        print(f"{row.name:<11} {row.state:<10} {row.address:<26} pid {pid}{detail}")
    return rows


def cmd_reset(args: argparse.Namespace) -> int:
    stack = get_stack()
    stack.reset()
    print(f"stopped the stack and removed {stack.settings.home}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    """`up`, then JupyterLab on the lessons; options after `lab` go to Jupyter."""
    from cdc_kit.lab import notebooks_folder, run_jupyter_lab

    folder = notebooks_folder()  # before starting anything: a missing folder is one line
    cmd_up(args)
    return run_jupyter_lab(folder, args.rest)


def cmd_capture(args: argparse.Namespace) -> int:
    from cdc_kit.capture.worker import main as capture_main

    return capture_main(args.rest)


def cmd_route(args: argparse.Namespace) -> int:
    from cdc_kit.router import main as route_main

    return route_main(args.rest)


def cmd_doctor(args: argparse.Namespace) -> int:
    from cdc_kit.doctor import main as doctor_main

    return doctor_main(args.rest)


def cmd_env(args: argparse.Namespace) -> int:
    """Shell variables for psql and curl: `eval "$(python -m cdc_kit env)"`."""
    s = get_stack().settings
    scheme = "https" if s.clickhouse_secure else "http"
    values: dict[str, object] = {
        "PGHOST": s.pg_host,
        "PGPORT": s.pg_port,
        "PGUSER": s.pg_user,
        "PGPASSWORD": s.pg_password,
        "PGDATABASE": s.pg_database,
        "CLICKHOUSE_URL": f"{scheme}://{s.clickhouse_host}:{s.clickhouse_port}/",
        "CLICKHOUSE_USER": s.clickhouse_user,
        "CLICKHOUSE_PASSWORD": s.clickhouse_password,
        "KAFKA_BOOTSTRAP": s.kafka_bootstrap,
    }
    if s.pg_sslmode:
        values["PGSSLMODE"] = s.pg_sslmode
    if s.pg_sslrootcert:
        values["PGSSLROOTCERT"] = s.pg_sslrootcert
    for name, value in values.items():
        print(f"export {name}={shlex.quote(str(value))}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cdc_kit.demo import main as demo_main

    return demo_main(args.rest)


def cmd_api(args: argparse.Namespace) -> int:
    from cdc_kit.api import main as api_main

    return api_main(args.rest)


def cmd_solutions(args: argparse.Namespace) -> int:
    from cdc_kit.solutions import main as solutions_main

    return solutions_main(args.rest)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "up": (cmd_up, "start the embedded stack (idempotent); in docker mode, check it"),
    "down": (cmd_down, "stop the services cdc-kit started"),
    "status": (cmd_status, "show each service, its address and health"),
    "reset": (cmd_reset, "stop everything and delete the state folder"),
    "lab": (cmd_lab, "up, then JupyterLab on the lessons (options after it go to Jupyter)"),
    "capture": (cmd_capture, "run the capture service in the foreground"),
    "route": (cmd_route, "run the router as a service in the foreground"),
    "demo": (cmd_demo, "make a few changes and show them arrive in ClickHouse"),
    "api": (cmd_api, "serve the seed's HTTP write API (FastAPI, default port 3002)"),
    "doctor": (cmd_doctor, "one screen for an instructor: services, slots, router, dead letters"),
    "env": (cmd_env, 'shell variables for psql and curl: eval "$(python -m cdc_kit env)"'),
    "solutions": (cmd_solutions, "write the instructor's copy of the lessons (solved) to DIR"),
}


#: Commands with options of their own (see `python -m cdc_kit route --help`).
PASS_THROUGH = ("lab", "capture", "route", "demo", "api", "doctor", "solutions")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cdc_kit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        # Pass-through commands parse their own options (and their own --help).
        command = sub.add_parser(name, help=help_text, add_help=name not in PASS_THROUGH)
        if name == "up":
            command.add_argument("--only", nargs="+", help="start only these services")
        else:
            command.set_defaults(only=None)
    return parser


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming the environment variable that holds a bad value."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        if not field:  # a rule across settings names them; its input (all of them) stays unshown
            problems.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        value = "***" if "password" in field else error.get("input")
        problems.append(f"CDC_KIT_{field.upper()}={value!r}: {error['msg']}")
    return "invalid setting " + "; ".join(problems)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command in PASS_THROUGH:
        args.rest = rest  # options of `capture`, `route` and `demo` go to their own parsers
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    handler = COMMANDS[args.command][0]
    try:
        get_settings()
        return handler(args)
    except FixableError as exc:  # a person can fix it: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"error: {describe_settings_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
