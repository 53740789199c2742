"""One error family: whatever the kit raises, `except CdcKitError` catches it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import get_args

import cdc_kit
from cdc_kit.errors import CdcKitError, FixableError
from cdc_kit.router.dead_letters import Stage


def kit_exceptions() -> list[type[BaseException]]:
    found = []
    for module in pkgutil.walk_packages(cdc_kit.__path__, "cdc_kit."):
        if module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.name:
                found.append(value)
    return found


def test_every_exception_the_kit_defines_is_a_cdc_kit_error() -> None:
    exceptions = kit_exceptions()
    assert len(exceptions) >= 12
    outside = [e.__qualname__ for e in exceptions if not issubclass(e, CdcKitError)]
    assert not outside, f"not in the family: {outside}"


def test_callers_that_catch_the_builtin_kinds_still_catch_them() -> None:
    from cdc_kit.contract import EventParseError
    from cdc_kit.olap import ModelError, OlapValidationError
    from cdc_kit.pgoutput import PgOutputDecodeError

    for kind in (EventParseError, ModelError, OlapValidationError, PgOutputDecodeError):
        assert issubclass(kind, ValueError)
    assert issubclass(FixableError, RuntimeError)


def test_dead_letter_stages_are_one_closed_set() -> None:
    assert get_args(Stage) == ("decode", "lookup", "validate", "enrich", "warehouse")
