"""The widget lab against the real stack: the handlers, the timing, and the panel's wiring.

The router runs in the background as in lesson 09; every assertion reads PostgreSQL or
ClickHouse itself. The panel is built without a browser: buttons are pressed with `.click()`
and its refresh task runs in an asyncio loop of the test's own.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import text

from cdc_kit.errors import CdcKitError
from cdc_kit.peek import recent_events
from cdc_kit.router import Router
from cdc_kit.services.process import wait_until
from cdc_kit.stack import Stack
from cdc_kit.widgets import ChangeLab, LabPanel


@pytest.fixture()
def lab(stack: Stack, running_router: Router) -> Iterator[ChangeLab]:
    made = ChangeLab(stack, seed=7)
    yield made
    made.close()


def test_an_insert_with_typed_values_reaches_clickhouse_final(lab: ChangeLab) -> None:
    change = lab.insert("customer", name="Ada Tested", city="Paris")
    source = lab.pg_row("customer", change.id)
    assert (source["name"].iloc[0], source["city"].iloc[0]) == ("Ada Tested", "Paris")
    assert source["email"].iloc[0].endswith("@example.com")  # a random value for the rest
    assert lab.wait_visible(change) > 0
    final = lab.ch_final("customer", change.id)
    assert final[["name", "city", "is_deleted"]].values.tolist() == [["Ada Tested", "Paris", 0]]
    assert final["lsn"].iloc[0] >= change.wal_before


def test_final_shows_the_newest_of_the_stored_versions(lab: ChangeLab) -> None:
    product = lab.insert("product", name="Test teapot", price="10.00")
    lab.update("product", product.id, price="12.34")
    random_change = lab.update("product", product.id)  # no values: one column at random
    lab.wait_visible(random_change)
    newest = lab.pg_row("product", product.id)["price"].iloc[0]
    assert newest != Decimal("12.34")
    final = lab.ch_final("product", product.id)
    versions = lab.ch_versions("product", product.id)
    assert final["price"].tolist() == [newest]
    assert final["lsn"].iloc[0] == versions["lsn"].max()


def test_a_random_update_always_changes_the_row(lab: ChangeLab) -> None:
    """An update that keeps every value sends no UPDATE: no event, and waiting for it timed out
    (a price factor of 1.00 did that once in CI). A random update must change something."""
    for price, factor in (("24.50", 100), ("0.01", 80)):  # the same price, or rounded back to it
        product = lab.insert("product", price=price)
        lab.rng.randint = lambda low, high, factor=factor: factor  # type: ignore[method-assign]
        change = lab.update("product", product.id)
        assert lab.pg_row("product", product.id)["price"].iloc[0] != Decimal(price)
        lab.wait_visible(change, timeout=5)


def test_a_random_update_of_an_order_with_a_typed_status_starts_the_cycle_over(
    lab: ChangeLab,
) -> None:
    """A learner typed a status the kit does not know: Update (and Bulk) must not raise."""
    order = lab.insert("order", status="on hold", items=1)
    lab.update("order", order.id)
    assert lab.pg_row("order", order.id)["status"].iloc[0] == "pending"


def test_an_update_that_changes_nothing_is_refused(lab: ChangeLab) -> None:
    product = lab.insert("product", price="9.99")
    with pytest.raises(CdcKitError, match=rf"product {product.id} already has price=9.99: nothing"):
        lab.update("product", product.id, price="9.99")
    assert len(lab.changes) == 1


def test_a_delete_hides_the_row_in_final_and_leaves_a_delete_marker(lab: ChangeLab) -> None:
    customer = lab.insert("customer")
    lab.wait_visible(customer)
    deletion = lab.delete("customer", customer.id)
    lab.wait_visible(deletion)
    assert lab.pg_row("customer", customer.id).empty
    assert lab.ch_final("customer", customer.id).empty
    newest = lab.ch_versions("customer", customer.id).iloc[-1]
    assert (newest["is_deleted"], newest["lsn"] >= deletion.wal_before) == (1, True)


def test_an_order_is_written_with_its_items_and_its_total(lab: ChangeLab, stack: Stack) -> None:
    with stack.pg_engine().connect() as conn:
        (p1, price1), (p2, price2) = conn.execute(
            text("SELECT id, price FROM product ORDER BY id LIMIT 2")
        ).all()
    order = lab.insert("order", items=[(p1, 2), (p2, 1)])
    assert lab.pg_row("order", order.id)["total"].iloc[0] == price1 * 2 + price2
    lab.wait_visible(order)
    items = stack.clickhouse().query(
        "SELECT productId, quantity FROM orderitem FINAL WHERE orderId = {id:UInt64} ORDER BY id",
        parameters={"id": order.id},
    ).result_rows
    assert items == [(p1, 2), (p2, 1)]


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda lab, c: lab.update("customer", c, country="X"), "country: String should have"),
        (lambda lab, c: lab.update("customer", c, nickname="A"), "customer has no column nick"),
        (lambda lab, c: lab.insert("order", customerId=10**9), "foreign key"),
        (lambda lab, c: lab.insert("order", items=0), "1 to 20 items"),
        (lambda lab, c: lab.delete("customer", 10**9), "does not exist"),
        (lambda lab, c: lab.insert("invoice"), "unknown table 'invoice'"),
        (lambda lab, c: lab.bulk(0), "positive number"),
    ],
    ids=["rule", "column", "foreign-key", "items", "missing-row", "table", "bulk"],
)
def test_bad_input_is_refused_in_one_line_and_writes_nothing(
    lab: ChangeLab, stack: Stack, call, says: str
) -> None:
    customer = lab.insert("customer", name="Untouched").id

    def state() -> tuple:
        with stack.pg_engine().connect() as conn:
            return conn.execute(
                text(
                    'SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM "order"), '
                    "(SELECT country FROM customer WHERE id = :id)"
                ),
                {"id": customer},
            ).one()

    before, changes = state(), len(lab.changes)
    with pytest.raises(CdcKitError) as refused:
        call(lab, customer)
    assert says in str(refused.value) and "\n" not in str(refused.value)
    assert (state(), len(lab.changes)) == (before, changes)


def test_a_burst_reports_progress_and_clickhouse_agrees_row_by_row(lab: ChangeLab) -> None:
    progress: list[tuple[int, int]] = []
    changes = lab.bulk(40, lambda done, total: progress.append((done, total)))
    assert progress == [(n, 40) for n in range(1, 41)]
    assert [c.tracked for c in changes] == [False] * 39 + [True]
    lab.wait_visible(changes[-1])  # one partition, commit order: everything before is there
    for table, key in {(c.table, c.id) for c in changes}:
        source = lab.pg_row(table, key)
        final = lab.ch_final(table, key)[list(source.columns)]
        assert source.astype(str).values.tolist() == final.astype(str).values.tolist(), (table, key)



class ScriptedRandom(random.Random):
    """The burst's dice, scripted: each roll and each table in turn; every other draw random."""

    def __init__(self, rolls: list[float], tables: list[str]) -> None:
        super().__init__(0)
        self.rolls, self.tables = rolls, tables

    def random(self) -> float:
        return self.rolls.pop(0)

    def getrandbits(self, k: int) -> int:
        # Defined so that randint and choice keep drawing bits, not random(): a subclass that
        # overrides random() alone gets a randbelow built on it.
        return super().getrandbits(k)

    def choice(self, seq):
        if list(seq) == ["customer", "product", "order"]:
            return self.tables.pop(0)
        return super().choice(seq)


def test_a_burst_deletes_only_rows_a_cascade_left(
    lab: ChangeLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The burst places an order for its own new customer, deletes the customer (the order
    goes with it: ON DELETE CASCADE), then rolls a delete of an order: none of its own is left,
    so it inserts one instead of failing on the order the cascade took."""
    newest = lambda db, model, k: lab.ids(model.__tablename__, k)  # noqa: E731
    monkeypatch.setattr(lab, "_random_ids", newest)  # the order goes to the new customer
    lab.rng = ScriptedRandom(
        rolls=[0.9, 0.9, 0.0, 0.0], tables=["customer", "order", "customer", "order"]
    )
    changes = lab.bulk(4)
    order = changes[1].id
    assert [(c.table, c.operation) for c in changes] == [
        ("customer", "insert"), ("order", "insert"), ("customer", "delete"), ("order", "insert")
    ]
    # Gone with its customer (the burst deleted no order), while the new one is there.
    assert lab.pg_row("order", order).empty and not lab.pg_row("order", changes[3].id).empty


def test_a_change_waits_on_the_topic_while_the_router_is_stopped(
    lab: ChangeLab, running_router: Router
) -> None:
    running_router.stop()
    try:
        change = lab.insert("product")
        key = f"product:{change.id}"
        on_topic = wait_until(  # capture published it: from here on only the router is missing
            lambda: key in set(recent_events(lab.stack, limit=20, table="product")["key"]),
            timeout=10,
        )
        assert on_topic and not lab.is_visible(change) and lab.poll() == []
    finally:
        running_router.start()
    assert lab.wait_visible(change) > 0
    assert lab.latencies()["id"].iloc[-1] == change.id


def test_wait_visible_says_what_to_check_when_nothing_arrives(
    lab: ChangeLab, running_router: Router
) -> None:
    running_router.stop()
    try:
        change = lab.insert("customer")
        with pytest.raises(CdcKitError, match="is the router running"):
            lab.wait_visible(change, timeout=0.3)
    finally:
        running_router.start()
    lab.wait_visible(change)


# ---- the panel ---------------------------------------------------------------------------------
def test_panel_buttons_call_the_lab_and_the_views_follow(
    lab: ChangeLab, running_router: Router
) -> None:
    panel = LabPanel(lab, running_router)
    panel.table.value = "customer"
    panel.fields["name"].value = "Panel Ada"
    panel.insert_button.click()
    inserted = lab.changes[-1]
    assert (inserted.operation, lab.pg_row("customer", inserted.id)["name"].iloc[0]) == (
        "insert",
        "Panel Ada",
    )
    assert panel.row.value == inserted.id and panel.watching == ("customer", inserted.id)
    lab.wait_visible()
    panel.refresh()
    assert "Panel Ada" in panel.final_view.value and "Panel Ada" in panel.pg_view.value

    panel.fields["name"].value = ""
    panel.fields["city"].value = "Uppsala"
    panel.update_button.click()
    lab.wait_visible()
    panel.refresh()
    assert "Uppsala" in panel.final_view.value

    panel.delete_button.click()
    assert lab.changes[-1].operation == "delete"
    lab.wait_visible()
    panel.refresh()
    assert "no live row" in panel.final_view.value and "no row" in panel.pg_view.value
    assert "<td>1</td>" in panel.versions_view.value  # the delete marker's is_deleted
    assert "routed" in panel.stats_view.value and "<table" in panel.events_view.value
    panel.close()
    assert not running_router.running
    running_router.start()


def test_panel_shows_bad_input_in_one_line_and_writes_nothing(
    lab: ChangeLab, running_router: Router
) -> None:
    panel = LabPanel(lab, running_router)
    panel.table.value = "product"
    panel.fields["price"].value = "minus three"
    changes = len(lab.changes)
    panel.insert_button.click()
    assert "✗" in panel.status.value and "price" in panel.status.value
    assert len(lab.changes) == changes
    panel.close(release_router=False)


def test_panel_bulk_fills_the_progress_bar(lab: ChangeLab, running_router: Router) -> None:
    panel = LabPanel(lab, running_router)
    panel.bulk_count.value = 12
    panel.bulk_button.click()
    assert (panel.progress.value, panel.progress.max) == (12, 12), panel.status.value
    assert "12 changes" in panel.status.value
    lab.wait_visible()
    panel.close(release_router=False)


def test_panel_router_toggle_stops_and_starts_the_router(
    lab: ChangeLab, running_router: Router
) -> None:
    panel = LabPanel(lab, running_router)
    assert panel.router_button.value is True
    panel.router_button.value = False
    assert not running_router.running and panel.router_button.description == "router stopped"
    panel.router_button.value = True
    assert running_router.running and panel.router_button.description == "router running"
    panel.close(release_router=False)


def test_the_panel_says_when_its_router_handed_the_group_over(
    lab: ChangeLab, running_router: Router, stack: Stack
) -> None:
    """Another lesson's router asks for the group: the panel's router stops and says so."""
    panel = LabPanel(lab, running_router)
    other = Router(stack)
    try:
        other.catch_up()  # the next lesson's first cell
        panel.refresh()
        assert not running_router.running and panel.router_button.value is False
        assert "handed its group over to pid" in panel.status.value
        panel.router_button.value = True  # take it back: the other router holds nothing now
        assert running_router.running
    finally:
        other.close()
        panel.close(release_router=False)
        if not running_router.running:
            running_router.start()


def test_the_panel_refreshes_itself_from_its_event_loop(
    lab: ChangeLab, running_router: Router
) -> None:
    panel = LabPanel(lab, running_router, refresh_s=0.2)
    customer = lab.insert("customer", city="Osaka")
    lab.wait_visible(customer)
    panel.watching = ("customer", customer.id)

    async def scenario() -> str:
        panel.start()
        assert panel.refreshing
        change = lab.update("customer", customer.id, city="Recife")  # not via the panel
        deadline = time.monotonic() + 15
        while "Recife" not in panel.final_view.value and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        panel.stop()
        assert change.latency_s is not None  # timed by the panel's task, not by wait_visible
        return panel.final_view.value

    assert "Recife" in asyncio.run(scenario())
    assert "commit → visible in FINAL" in panel.latency_label.value
    assert bytes(panel.latency_plot.value).startswith(b"\x89PNG")
    panel.close(release_router=False)


def test_start_outside_an_event_loop_says_what_to_do(lab: ChangeLab) -> None:
    panel = LabPanel(lab)
    with pytest.raises(CdcKitError, match="call refresh"):
        panel.start()
