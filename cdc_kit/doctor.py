"""`python -m cdc_kit doctor`: one screen an instructor reads at a learner's desk.

Services and their memory, the capture heartbeat, every replication slot's lag and retained
WAL, whether a router runs (and in which process), dead letters waiting, and what to do about
anything that looks wrong.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import psutil

from cdc_kit import replication
from cdc_kit.capture.heartbeat import heartbeat_path, is_streaming, read_heartbeat
from cdc_kit.router.dead_letters import DEAD_LETTER_TABLE, dead_letter_table
from cdc_kit.router.lease import lease_holder
from cdc_kit.stack import Stack, get_stack
from cdc_kit.warehouse import table_exists

#: A slot that keeps more WAL than this is worth a word (the server keeps at most 1 GB).
RETAINED_WARNING = 64 << 20


@dataclass
class Report:
    """What doctor found: lines to print, and the advice for what looked wrong."""

    lines: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.lines.append(f"{label:<13} {text}")

    def __str__(self) -> str:
        text = "\n".join(self.lines)
        if self.advice:
            text += "\n\nto do:\n" + "\n".join(f"  - {a}" for a in self.advice)
        else:
            text += "\n\nall good."
        return text


def megabytes(value: float | int | None) -> str:
    return "?" if value is None else f"{value / 2**20:,.1f} MB"


def rss(pid: int) -> int:
    """Resident memory of a process and its children (PostgreSQL forks a process per client)."""
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return 0


def examine(stack: Stack) -> Report:
    """Look at everything (read only) and say what is wrong in plain words."""
    s = stack.settings
    report = Report()
    report.add("lab", f"{s.home} (mode {s.mode}, ports {s.ports})")
    total = 0
    statuses = stack.status()
    for status in statuses:
        memory = rss(status.pid) if status.pid else 0
        total += memory
        shown = f"  {megabytes(memory)}" if memory else ""
        report.add(status.name, f"{status.state:<10} {status.address}{shown}")
        if not status.healthy:
            report.advice.append(f"{status.name} is {status.state}: {_restart(stack, status.name)}")
    if s.mode == "embedded":
        _capture(stack, report)
    if all(status.healthy for status in statuses if status.name != "capture"):
        _slots(stack, report)
        _dead_letters(stack, report)
    total += _router(stack, report)
    report.add("memory", f"{megabytes(total)} for the stack and the router")
    return report


#: docker-compose.yaml's name for a service, where it differs from the kit's.
COMPOSE_NAMES = {"broker": "redpanda"}


def _restart(stack: Stack, name: str) -> str:
    """How to bring a service back: the kit starts embedded ones, docker compose the others."""
    if stack.settings.mode == "docker":
        service = COMPOSE_NAMES.get(name, name)
        return f"run `docker compose up -d` (its log: `docker compose logs {service}`)"
    return f"run `python -m cdc_kit up` (its log: {stack.service(name).log_file})"


def _capture(stack: Stack, report: Report) -> None:
    beat = read_heartbeat(heartbeat_path(stack.settings))
    if not beat:
        report.add("capture", "no heartbeat yet")
        return
    age = time.time() - float(beat.get("heartbeat", 0))
    state = "streaming" if is_streaming(beat) else beat.get("state", "?")
    text = f"{state}, heartbeat {age:.1f} s ago, {beat.get('events', 0):,} events"
    report.add("", text + f", confirmed {beat.get('confirmed_lsn', '?')}")
    if beat.get("error"):
        report.add("", f"last error: {beat['error']}")


def _slots(stack: Stack, report: Report) -> None:
    s = stack.settings
    conn = stack.pg_connection()
    conn.autocommit = True
    try:
        slots = replication.slot_health(conn)
    finally:
        conn.close()
    if not any(slot.slot_name == s.slot_name for slot in slots):
        report.advice.append(f"the capture's slot {s.slot_name} does not exist (yet)")
    for slot in slots:
        mine = " (capture's)" if slot.slot_name == s.slot_name else ""
        report.add(
            "slot",
            f"{slot.slot_name}{mine}: {'active' if slot.active else 'inactive'}, "
            f"lag {megabytes(slot.lag_bytes)}, retains {megabytes(slot.retained_bytes)} of WAL, "
            f"wal_status {slot.wal_status}",
        )
        if slot.wal_status == "lost":
            report.advice.append(
                f"slot {slot.slot_name} was invalidated (it kept more WAL than "
                "max_slot_wal_keep_size allows): drop it; for the capture's slot, "
                "`python -m cdc_kit reset` starts the lab afresh"
            )
        elif not slot.active and not mine and (slot.retained_bytes or 0) > RETAINED_WARNING:
            drop = f"SELECT pg_drop_replication_slot('{slot.slot_name}')"
            report.advice.append(
                f"slot {slot.slot_name} is idle and pins {megabytes(slot.retained_bytes)} of WAL: "
                f"drop it if no lesson needs it ({drop})"
            )


def _dead_letters(stack: Stack, report: Report) -> None:
    s = stack.settings
    ch = stack.clickhouse(database="default")
    table = dead_letter_table(s.clickhouse_database)
    if not table_exists(ch, s.clickhouse_database, DEAD_LETTER_TABLE):
        report.add("dead letters", "none (no router has run yet)")
        return
    rows = ch.query(
        f"SELECT stage, count() FROM {table} FINAL WHERE `group` = {{g:String}} "  # noqa: S608
        "AND replayed = 0 GROUP BY stage ORDER BY stage",
        parameters={"g": s.router_group},
    ).result_rows
    waiting = sum(count for _, count in rows)
    by_stage = ", ".join(f"{stage}: {count}" for stage, count in rows)
    report.add("dead letters", f"{waiting} waiting" + (f" ({by_stage})" if rows else ""))
    if waiting:
        report.advice.append(
            "dead letters wait: look at them with Router(stack).dead_letters(); once the cause "
            "is fixed (a model registered...), router.replay_dead_letters()"
        )


def _router(stack: Stack, report: Report) -> int:
    holder = lease_holder(stack.settings.home, stack.settings.router_group)
    if holder is None:
        report.add("router", f"none running for group {stack.settings.router_group}")
        return 0
    report.add(
        "router", f"group {stack.settings.router_group} in pid {holder['pid']} ({holder['name']})"
    )
    return rss(int(holder["pid"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc_kit doctor", description=__doc__)
    parser.parse_args(argv)
    report = examine(get_stack())
    print(report)
    return 0 if not report.advice else 3
