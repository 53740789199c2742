"""Self-check of lesson 05: `type_default` on every OLAP column, then on a real delete event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Optional

from cdc_kit import olap
from cdc_kit.checks.common import (
    CheckFailed,
    is_placeholder,
    passed,
    self_check,
    show_solution,
    topic_events,
)

HINT = "return TYPE_DEFAULTS[unwrap(annotation)]"


def _as_written(field: Any) -> Any:
    """A model field's annotation as written: Pydantic moves `Annotated` hints to metadata."""
    hints = tuple(h for h in field.metadata if isinstance(h, str))
    return Annotated[(field.annotation, *hints)] if hints else field.annotation


def _annotations() -> list[Any]:
    """Every column annotation of the registered OLAP models, as written (Annotated kept),
    plus the spellings a codebase uses for optional columns."""
    found: list[Any] = []
    for model in olap.OLAP_MODELS.values():
        for field in model.model_fields.values():
            annotation = _as_written(field)
            if annotation not in found:
                found.append(annotation)
    return [
        *found,
        Optional[Decimal],  # noqa: UP045 - the spelling under test
        Optional[Annotated[int, "uint64"]],  # noqa: UP045
        Annotated[str, "LowCardinality"] | None,
        datetime | None,
    ]


def _same(got: Any, wanted: Any) -> bool:
    return type(got) is type(wanted) and got == wanted


@self_check
def check_type_default(type_default: Callable[[Any], Any], stack: Any, deleted_id: int) -> None:
    """`type_default` gives the kit's default for every annotation, and filling the real delete
    event of product `deleted_id` with it yields a row the OLAP model accepts."""
    if not callable(type_default):
        raise CheckFailed(f"type_default is {type_default!r}, not a function", HINT)
    for annotation in _annotations():
        wanted = olap.default_for(annotation)
        try:
            got = type_default(annotation)
        except Exception as exc:  # noqa: BLE001 - any error of the learner's code is the answer
            raise CheckFailed(
                f"type_default({annotation!r}) raised {type(exc).__name__}: {exc}",
                "unwrap the annotation first, then look up the plain type: " + HINT,
            ) from None
        if is_placeholder(got):
            unwrapped = olap.unwrap(annotation)[0].__name__
            raise CheckFailed(
                f"type_default({annotation!r}) returned {got!r}, expected {wanted!r}",
                f"unwrap it to {unwrapped} first (the unwrap function of step 2): " + HINT,
            )
        if not _same(got, wanted):
            raise CheckFailed(
                f"type_default({annotation!r}) returned {got!r} ({type(got).__name__}), "
                f"expected {wanted!r} ({type(wanted).__name__})",
                HINT,
            )
    events = topic_events(stack, "product")
    deletes = events[(events["key"] == f"product:{deleted_id}") & (events["operation"] == "delete")]
    if deletes.empty:
        raise CheckFailed(
            f"the topic holds no delete event of product {deleted_id}",
            "re-run the cell of step 1: it adds the product, deletes it and routes the change",
        )
    payload = dict(deletes.iloc[-1]["payload"])
    filled = {}
    for name, field in olap.ProductOlap.model_fields.items():
        if name in payload and payload[name] is None and not olap.unwrap(field.annotation)[1]:
            filled[name] = type_default(_as_written(field))
    try:
        olap.ProductOlap.model_validate({**payload, **filled, "is_deleted": 1})
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"the filled delete event is still invalid: {exc}", HINT) from None
    shown = ", ".join(f"{name}={value!r}" for name, value in filled.items())
    passed(f"type_default fills the delete of product {deleted_id}: {shown}")


def solution() -> None:
    """Show a worked solution of this lesson's build exercise."""
    show_solution(__name__)
