"""Self-check of lesson 09: a button of your own, wired to the lab, changes a price end to end."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cdc_kit.checks.common import (
    CheckFailed,
    passed,
    require_answer,
    self_check,
    show_solution,
    wait_for,
)
from cdc_kit.errors import CdcKitError

WIRE_HINT = (
    "def raise_price(button): ... lab.update('product', product_id, price=new_price); then "
    "raise_button = widgets.Button(description='+10 %') and raise_button.on_click(raise_price)"
)


def _price(row: Any) -> Decimal | None:
    """The price in a one-row frame from `lab.pg_row` or `lab.ch_final` (None: no row)."""
    return Decimal(row["price"].iloc[0]) if len(row) else None


def _final_price(lab: Any, product_id: int) -> Decimal | None:
    return _price(lab.ch_final("product", product_id))


@self_check
def check_raise_button(lab: Any, raise_button: Any, product_id: int, timeout: float = 15.0) -> None:
    """Clicking `raise_button` raises the product's price by 10 % in PostgreSQL, and the new
    price reaches ClickHouse FINAL (the router runs in the background)."""
    import ipywidgets

    require_answer(raise_button, "raise_button", WIRE_HINT)
    if not isinstance(raise_button, ipywidgets.Button):
        raise CheckFailed(
            f"`raise_button` is a {type(raise_button).__name__}, not a button", WIRE_HINT
        )
    before = _price(lab.pg_row("product", product_id))
    if before is None:
        raise CheckFailed(
            f"product {product_id} is gone from PostgreSQL",
            "run the cell above the exercise again: it makes a fresh product",
        )
    changes_before = len(lab.changes)
    raise_button.click()
    after = _price(lab.pg_row("product", product_id))
    if after == before:
        raise CheckFailed(
            f"clicking the button left the price of product {product_id} at {before} in "
            "PostgreSQL (an error in your handler is printed just above)",
            "connect a handler that takes the button as its one argument and changes "
            f"PostgreSQL through the lab: {WIRE_HINT}",
        )
    wanted = before * Decimal("1.10")
    if after is None or abs(after - wanted) > Decimal("0.01"):
        raise CheckFailed(
            f"one click took the price from {before} to {after}; +10 % would be "
            f"{wanted.quantize(Decimal('0.01'))}",
            "new_price = (price * Decimal('1.10')).quantize(Decimal('0.01')), from the price "
            "PostgreSQL has now (lab.pg_row('product', product_id))",
        )
    made = [
        change
        for change in lab.changes[changes_before:]
        if change.table == "product" and change.id == product_id
    ]
    latency = None
    if made:
        # Through the lab: the lab waits for this change to reach FINAL, and times it.
        try:
            latency = lab.wait_visible(made[-1], timeout=timeout)
        except CdcKitError:
            pass  # not there in time: FINAL below shows what ClickHouse has instead
    else:
        # A handler that bypassed the lab: follow FINAL until it shows the new price.
        wait_for(lambda: True if _final_price(lab, product_id) == after else None, timeout, 0.05)
    final = _final_price(lab, product_id)
    if final != after:
        shown = "no row" if final is None else final
        raise CheckFailed(
            f"PostgreSQL has {after}, but ClickHouse FINAL still shows {shown} after "
            f"{timeout:.0f} s",
            "is the router running? router.start(), or the panel's router toggle",
        )
    timed = "" if latency is None else f"; commit -> FINAL in {latency * 1000:.0f} ms"
    passed(
        f"one click raised product {product_id} from {before} to {after} in PostgreSQL, "
        f"and ClickHouse FINAL followed{timed}"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
