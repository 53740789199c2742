"""Self-checks of lesson 05: which of the seed's tables accept a delete (a prediction), and the
delete-only validator the learner builds, judged on real events of one product from the topic."""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable
from typing import Any, Union, get_origin

import pandas as pd
from pydantic import BaseModel, TypeAdapter, ValidationError

from cdc_kit import olap
from cdc_kit.checks.common import (
    CheckFailed,
    judge_prediction,
    passed,
    require_answer,
    self_check,
    show_solution,
    topic_events,
)
from cdc_kit.lsn import str_to_lsn

SEED_TABLES = ("customer", "product", "order", "orderitem")


# ---- the prediction: which of the seed's tables accept a delete? ------------------------------
def _tables(value: Any) -> Any:
    """A prediction as a set of table names: 'order', ['order'], {'Order'} all mean the same."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Iterable):
        return frozenset(str(name).strip().lower() for name in value)
    return value


def reveal_accepting(prediction: Any, verdicts: pd.DataFrame) -> None:
    """Feedback on `predicted_accepting`: the tables whose delete the seed's models validate.

    `verdicts` is the lesson's table (one row per table, a boolean column `validates?`).
    """
    accepting = sorted(verdicts.loc[verdicts["validates?"], "table"])
    everything, nothing = frozenset(SEED_TABLES), frozenset[str]()
    judge_prediction(
        prediction,
        accepting,
        name="predicted_accepting",
        normalise=_tables,
        why=(
            "The base class fills '' and 0 first; then each column's rules run. The seed's OLAP "
            "models redeclare some columns, and a redeclared column loses the *Base class's "
            "rules: Product's category (LowCardinality, no rule) and price (ge=0), Order's "
            "total (ge=0), OrderItem's quantity and price (ge=0, 'allow 0 for deletes'). What "
            "is not redeclared keeps its rule: customer's name, country and city, and "
            "product's name, must have at least one character, and '' has none."
        ),
        wrong={
            nothing: (
                "You expected the inherited gt=0 and min_length=1 to reject every table. Order "
                "and OrderItem redeclare their numbers with ge=0, so 0 passes there."
            ),
            everything: (
                "You expected the filled defaults to be enough. They are filled, and then the "
                "rules of the *Base classes still judge them."
            ),
            frozenset({"product", "order", "orderitem"}): (
                "Product redeclares category and price, but not name: name keeps min_length=1."
            ),
            frozenset({"customer", "order", "orderitem"}): (
                "Customer's email has no min_length, but name, country and city have one."
            ),
        },
    )


# ---- the build exercise: the delete-only validator ---------------------------------------------
START_HINTS = (
    "Which two classes does the exercise ask for, and which one carries the validator?",
    "Step 6 shows how the router calls model_validate (look at its context=); the code "
    "comment in the exercise cell shows the shape of both classes.",
)
NOT_FILLED_HINTS = (
    "A delete arrives with None in every column but the key. Where does your validator learn "
    "that this event is a delete?",
    "A validator with the parameters (cls, data, info) gets the router's context as "
    "info.context; step 6's model_validate call shows what the router puts in it.",
    "For a delete, walk cls.model_fields; for each None, step 2's unwrap and step 3's "
    "TYPE_DEFAULTS give the value.",
)
WRONG_PLACE_HINTS = (
    "Does the payload say which operation it came from? Look at the events in step 1.",
    "The payload holds the row's columns only; the router passes the operation beside it, as "
    "context (step 6). A validator with the parameters (cls, data, info) reads info.context.",
)
EVERY_EVENT_HINTS = (
    "An update that sets a column to NULL also carries None. Should that None become ''?",
    "Fill only when the context's operation is 'delete'; return every other event as it came.",
)
COPY_HINTS = (
    "Whose dictionary is `data`: yours, or the caller's?",
    "Fill a copy (dict(data)) and return the copy; the caller's event stays as it arrived.",
)
UNION_HINTS = (
    "Which spellings of 'a str or None' does your unwrapping recognise? Compare get_origin of "
    "both in step 2's table.",
    "Step 2's unwrap peels both typing.Union and types.UnionType; use it for every field.",
)
CRASH_HINTS = (
    "Which annotation did your validator not know? Print field.annotation for each field.",
    "Unwrap every annotation first (step 2's unwrap), then look the plain type up in "
    "TYPE_DEFAULTS (step 3).",
)
OTHER_EVENTS_HINTS = (
    "What does your validator return for an event that is not a delete?",
    "For any operation but 'delete', return data as it came; pydantic validates it as usual.",
)
UNIONS = (Union, types.UnionType)  # one and the same from Python 3.14 on
REQUIRED_COLUMNS = ("id", "name", "price", "description", "is_deleted", "lsn")


def _router_data(event: Any) -> dict[str, Any]:
    """What the router hands to model_validate for an event (as olap.row_values builds it)."""
    data = dict(event.payload)
    data["lsn"] = str_to_lsn(event.lsn)
    data["is_deleted"] = 1 if event.operation == "delete" else 0
    return data


def _events(stack: Any, product_id: int) -> dict[str, Any]:
    """The newest insert, NULL-setting update and delete of product `product_id` on the topic."""
    events = topic_events(stack, "product")
    mine = events[events["key"] == f"product:{product_id}"]
    found: dict[str, Any] = {}
    for event in mine.itertuples():
        if event.operation == "update" and event.payload.get("description") is not None:
            continue  # the update the exercise needs is the one that set the NULL
        found[event.operation] = event
    missing = [op for op in ("insert", "update", "delete") if op not in found]
    if missing:
        raise CheckFailed(
            f"the topic holds no {' / '.join(missing)} event of product {product_id}",
            "re-run the cell before the exercise: it inserts the product, sets its "
            "description to NULL, deletes it, and routes the changes",
        )
    return found


def _validate(model: type[BaseModel], data: dict[str, Any], operation: str) -> BaseModel:
    """Validate as the router does, with the operation in the context."""
    return model.model_validate(data, context={"operation": operation})


def _why(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'event'}: {item['msg']} "
        f"(got {item['input']!r})"
        for item in error.errors()
    )


def _spelling(annotation: Any) -> str:
    """How an annotation spells its None: 'X | None' (types.UnionType) or 'Optional[X]'."""
    origin = get_origin(annotation)
    return "X | None" if origin is types.UnionType else "Optional[X]"


def _origin_of_pipe() -> str:
    """What this Python's get_origin says of `str | None`, as a name: types.UnionType up to
    3.13, typing.Union from 3.14 on."""
    origin = get_origin(str | None)
    return f"{origin.__module__}.{getattr(origin, '__qualname__', origin)}"


def _crashed(what: str, exc: Exception) -> CheckFailed:
    return CheckFailed(f"your validator raised {type(exc).__name__} on {what}: {exc}", CRASH_HINTS)


def _check_delete(model: type[BaseModel], event: Any, product_id: int) -> BaseModel:
    data = _router_data(event)
    arrived = copy.deepcopy(data)
    try:
        row = _validate(model, data, "delete")
    except Exception as exc:  # noqa: BLE001 - any error of the learner's code is the answer
        raise _delete_failure(model, arrived, product_id, exc) from None
    if data != arrived:
        changed = sorted(name for name in arrived if data.get(name) != arrived[name])
        raise CheckFailed(
            f"your validator changed the caller's dict: after validating the delete, its "
            f"{', '.join(changed)} no longer hold what the event carried (None). A caller that "
            "keeps the event (for a dead letter, or to validate it against another model) "
            "would see your defaults instead",
            COPY_HINTS,
        )
    nullable = {
        name: field.annotation
        for name, field in model.model_fields.items()
        if olap.unwrap(field.annotation)[1]
    }
    kept = [name for name in nullable if getattr(row, name) is None]
    filled = [name for name in nullable if getattr(row, name) is not None]
    if kept and filled:  # one spelling filled, the other not: the unwrapping misses a spelling
        shown = ", ".join(f"{n} ({_spelling(nullable[n])})" for n in kept)
        done = ", ".join(f"{n} ({_spelling(nullable[n])})" for n in filled)
        raise CheckFailed(
            f"the delete's {shown} stayed None while {done} was filled: your unwrapping misses "
            f"one way of spelling None. On this Python, get_origin(str | None) is "
            f"{_origin_of_pipe()}",
            UNION_HINTS,
        )
    return row


def _delete_failure(
    model: type[BaseModel], arrived: dict[str, Any], product_id: int, exc: Exception
) -> CheckFailed:
    """Why the delete failed: the operation read from the payload, a spelling of None the
    unwrapping missed, nothing filled, or an error of the learner's code."""
    if _reads_the_payload(model, arrived):
        return CheckFailed(
            f"the delete of product {product_id} fails as the router sends it, and passes only "
            "when the payload itself says 'delete': your validator reads the operation from "
            "the payload, which holds the row's columns only",
            WRONG_PLACE_HINTS,
        )
    if isinstance(exc, KeyError) and exc.args and get_origin(exc.args[0]) in UNIONS:
        return CheckFailed(
            f"your validator found no default for {exc.args[0]!r}: it did not unwrap that "
            f"spelling of None. On this Python, get_origin(str | None) is {_origin_of_pipe()}",
            UNION_HINTS,
        )
    if isinstance(exc, ValidationError):
        return CheckFailed(
            f"the delete of product {product_id} failed validation, so the router would "
            f"dead-letter it: {_why(exc)}",
            NOT_FILLED_HINTS,
        )
    return _crashed(f"the delete of product {product_id}", exc)


def _reads_the_payload(model: type[BaseModel], data: dict[str, Any]) -> bool:
    """Would the delete pass if the payload itself named the operation (a wrong place)?"""
    for extra in ({"operation": "delete"}, {"metadata": {"operation": "delete"}}):
        try:
            _validate(model, {**copy.deepcopy(data), **extra}, "delete")
            return True
        except Exception:  # noqa: BLE001 - still failing: not the payload then
            continue
    return False


def _expected(model: type[BaseModel], name: str, value: Any) -> Any:
    """A payload value as the model's column type makes it (e.g. '48.00' -> Decimal('48.00'))."""
    return TypeAdapter(model.model_fields[name].annotation or Any).validate_python(value)


def _check_unchanged(model: type[BaseModel], event: Any, what: str) -> BaseModel:
    """An insert or update: validated, every column exactly as the event carries it."""
    data = _router_data(event)
    arrived = copy.deepcopy(data)
    try:
        row = _validate(model, data, event.operation)
    except ValidationError as error:
        raise CheckFailed(f"{what} failed validation: {_why(error)}", OTHER_EVENTS_HINTS) from None
    except Exception as exc:  # noqa: BLE001
        raise _crashed(what, exc) from None
    for name in model.model_fields:
        if name not in arrived:
            continue
        got, carried = getattr(row, name), arrived[name]
        if carried is None and got is not None:
            raise CheckFailed(
                f"{what} set {name} to NULL in PostgreSQL; your model turned it into {got!r}, "
                "and ClickHouse would claim a value the source does not have",
                EVERY_EVENT_HINTS,
            )
        if carried is not None and got != _expected(model, name, carried):
            raise CheckFailed(
                f"{what} carries {name} = {carried!r}; your model made it {got!r}",
                EVERY_EVENT_HINTS,
            )
    if data != arrived:
        raise CheckFailed(f"your validator changed the caller's dict of {what}", COPY_HINTS)
    return row


@self_check
def check_delete_only_validator(model: Any, stack: Any, product_id: int) -> None:
    """`model` (the learner's MyProductOlap) fills type defaults for the delete of product
    `product_id`, keeps the NULL its update set, takes its insert as it came, and leaves the
    caller's dict alone: validated on the real events of the topic, as the router calls it."""
    require_answer(model, "MyProductOlap", START_HINTS)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise CheckFailed(f"MyProductOlap is {model!r}, not a pydantic model class", START_HINTS)
    missing = [name for name in REQUIRED_COLUMNS if name not in model.model_fields]
    if missing:
        raise CheckFailed(
            f"MyProductOlap has no column(s) {', '.join(missing)}: build it on ProductColumns",
            START_HINTS,
        )
    events = _events(stack, product_id)
    deleted = _check_delete(model, events["delete"], product_id)
    _check_unchanged(model, events["update"], f"the update of product {product_id}")
    _check_unchanged(model, events["insert"], f"the insert of product {product_id}")
    shown = ", ".join(
        f"{name}={getattr(deleted, name)!r}" for name in ("name", "price", "description")
    )
    passed(
        f"MyProductOlap fills the delete of product {product_id} ({shown}), keeps the NULL "
        "its update set, takes the insert as it came, and leaves the caller's dict alone"
    )


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
