"""Lesson 09's exercises: how many events one order makes, and a customer's delete followed
through PostgreSQL's cascade into ClickHouse, driven with the lab's methods."""

from __future__ import annotations

from typing import Any

from cdc_kit.checks.common import (
    CheckFailed,
    as_number,
    judge_prediction,
    passed,
    require_answer,
    self_check,
    show_solution,
    topic_events,
    wait_for,
)

START = (
    "Which lab method makes a row, and what does it give back?",
    "lab.insert(...) returns a Change; its .id is the new row's id (step 1)",
)


def reveal_order_events(prediction: Any, stack: Any, order_id: int) -> int:
    """How many change events the insert of order `order_id` (with its items) published."""
    orders = topic_events(stack, "order")
    items = topic_events(stack, "orderitem")
    inserts = orders["operation"] == "insert"
    order_events = orders[(orders["key"] == f"order:{order_id}") & inserts]
    of_order = items["payload"].map(lambda row: isinstance(row, dict) and row.get("orderId"))
    item_events = items[(of_order == order_id) & (items["operation"] == "insert")]
    actual = len(order_events) + len(item_events)
    judge_prediction(
        prediction,
        actual,
        name="predicted_events",
        why=(
            f"The order is {len(order_events)} row and its items {len(item_events)} more, all in "
            "one transaction. Capture publishes one event per changed row, in commit order; "
            "the transaction only keeps them together (one batch for the router)."
        ),
        wrong={
            1: "One per transaction? A transaction can change thousands of rows; each is an event.",
            len(item_events): "The order row itself is an insert too.",
        },
        normalise=as_number,
    )
    return actual


def _change(lab: Any, table: str, operation: str, row_id: int) -> Any:
    """The lab's newest change of this kind, or None."""
    found = [
        change
        for change in lab.changes
        if (change.table, change.operation, change.id) == (table, operation, row_id)
    ]
    return found[-1] if found else None


def _inserts(stack: Any, table: str, wanted: Any) -> list[dict[str, Any]]:
    """The payloads of `table`'s insert events on the topic that `wanted(payload)` accepts."""
    events = topic_events(stack, table)
    inserts = events[events["operation"] == "insert"]["payload"]
    return [row for row in inserts if isinstance(row, dict) and wanted(row)]


def _stored(lab: Any, sql: str, **parameters: Any) -> list[tuple]:
    return lab.ch.query(sql, parameters=parameters).result_rows


@self_check
def check_cascade(lab: Any, customer_id: Any, order_id: Any, timeout: float = 15.0) -> None:
    """Customer `customer_id` and its order `order_id` (with items) were inserted through the
    lab, the customer was deleted through the lab, and ClickHouse followed PostgreSQL's
    cascade: a delete marker for the customer, the order and each item, none left in FINAL."""
    require_answer(customer_id, "experiment_customer", START)
    require_answer(order_id, "experiment_order", START)
    if _change(lab, "customer", "insert", customer_id) is None:
        raise CheckFailed(
            f"this lab did not insert customer {customer_id!r}",
            ("Did you make the customer with the lab, and keep the id it gave back?",
             "lab.insert('customer', ...) returns a Change with the id (step 1)"),
        )  # fmt: skip
    if _change(lab, "order", "insert", order_id) is None:
        raise CheckFailed(
            f"this lab did not insert order {order_id!r}",
            ("Did you make the order with the lab, and keep the id it gave back?",
             "lab.insert('order', ...) makes an order with items (step 4)"),
        )  # fmt: skip
    # What the rows were, from their insert events: the topic keeps them, while ClickHouse
    # may already have merged the live versions away behind their delete markers.
    order_inserts = _inserts(lab.stack, "order", lambda row: row.get("id") == order_id)
    owner = order_inserts[-1].get("customerId") if order_inserts else None
    if owner is not None and owner != customer_id:
        raise CheckFailed(
            f"order {order_id} belongs to customer {owner}, not to your customer "
            f"{customer_id}: deleting {customer_id} cannot take it along",
            ("Which column of an order names its customer?",
             "lab.insert accepts any column as a keyword, as in step 1: customerId=..."),
        )  # fmt: skip
    items = [row["id"] for row in _inserts(lab.stack, "orderitem",
                                           lambda row: row.get("orderId") == order_id)]  # fmt: skip
    if not items:
        raise CheckFailed(
            f"order {order_id} has no items: the cascade would have only one row to follow",
            ("How did step 4 give its order items?", "lab.insert('order', ..., items=2)"),
        )
    if _change(lab, "customer", "delete", customer_id) is None:
        if _change(lab, "order", "delete", order_id) is not None:
            raise CheckFailed(
                f"you deleted order {order_id} itself; the experiment deletes its customer "
                f"({customer_id}) and watches the order and its items go along",
                ("Which row does the experiment delete?", "lab.delete('customer', ...)"),
            )  # fmt: skip
        raise CheckFailed(
            f"customer {customer_id} has not been deleted through this lab",
            ("Which lab method deletes a row?", "lab.delete(table, id), as the panel's Delete"),
        )  # fmt: skip

    # An item's delete marker carries its own id only (orderId is 0 there: the delete event
    # had the key and nothing else), so items are found by the ids their live rows had.
    final = {
        "customer": "SELECT count() FROM customer FINAL WHERE id = {id:UInt64}",
        "order": "SELECT count() FROM `order` FINAL WHERE id = {id:UInt64}",
        "orderitem": "SELECT count() FROM orderitem FINAL WHERE id IN {id:Array(UInt64)}",
    }
    keys: dict[str, Any] = {"customer": customer_id, "order": order_id, "orderitem": items}

    def alive() -> dict[str, int]:
        counts = {table: _stored(lab, sql, id=keys[table])[0][0] for table, sql in final.items()}
        return {table: count for table, count in counts.items() if count}

    wait_for(lambda: None if alive() else True, timeout, 0.05)
    still = alive()
    if still:
        raise CheckFailed(
            f"ClickHouse FINAL still shows {still} after {timeout:.0f} s",
            ("Is a router routing in this kernel?",
             "router.start(), or the panel's router toggle (step 6)"),
        )  # fmt: skip
    markers = [
        _stored(lab, sql.replace(" FINAL", "") + " AND is_deleted = 1", id=keys[table])[0][0]
        for table, sql in final.items()
    ]
    passed(
        f"deleting customer {customer_id} deleted order {order_id} and its {len(items)} items "
        "in PostgreSQL (ON DELETE CASCADE); capture published a delete event for each row, "
        f"and ClickHouse stores delete markers for them ({markers[0]} customer, {markers[1]} "
        f"order, {markers[2]} items): FINAL shows none of them. (An item's delete marker has "
        "orderId 0: a delete event carries the key only.)"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
