"""capture/row_json.py writes each column's JSON from PostgreSQL's text, without the Python value.
Every writer must give exactly json.dumps(converter(text)): the bytes consumers parse."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_kit import pgoutput
from cdc_kit.capture.row_json import RowWriter, value_writer
from cdc_kit.contract import json_text

#: Texts PostgreSQL sends for each type (DateStyle ISO), special values included.
SAMPLES: dict[int, list[str]] = {
    16: ["t", "f"],
    17: ["\\x", "\\x00ff10", "abc\\\\d\\001"],
    20: ["0", "-9223372036854775808", "9223372036854775807"],
    21: ["-32768", "7"],
    23: ["2147483647", "-1"],
    26: ["4294967295"],
    114: ['{"a": [1, 2.50, null]}', "null", '"x"', "[]"],
    3802: ['{"a": [1, 2.5, null], "b": "\u00e9\u2603"}', "1e400"],
    700: ["1.5", "100000", "1e+30", "-0", "NaN", "Infinity", "-Infinity", "3.4028235e+38"],
    701: ["0.1", "1e-05", "1e+100", "-1.7976931348623157e+308", "5e-324", "123456789012"],
    1700: ["12.50", "0", "-0.0000001", "1" + "0" * 40, "NaN", "Infinity", "-Infinity"],
    1082: ["2026-01-02", "0001-01-01", "infinity", "-infinity", "0044-03-15 BC", "10000-01-01"],
    1083: ["03:04:05", "03:04:05.1", "23:59:59.999999", "24:00:00"],
    1114: [
        "2026-01-02 03:04:05",
        "2026-01-02 03:04:05.5",
        "0099-01-02 03:04:05.000001",
        "2026-01-02 03:04:05.000000",
        "infinity",
        "2026-01-02 03:04:05 BC",
    ],
    1184: [
        "2026-01-02 03:04:05+00",
        "2026-01-02 03:04:05.120+00",
        "0099-12-31 23:59:59.999999+00",
        "2026-01-02 03:04:05.123+05:30",
        "1999-12-31 23:59:59.999999-08",
        "1900-01-01 00:00:00+00:19:32",
        "-infinity",
    ],
}


@pytest.mark.parametrize("oid", sorted(SAMPLES))
def test_every_default_writer_writes_what_json_dumps_writes(oid: int) -> None:
    convert = pgoutput.DEFAULT_CONVERTERS[oid]
    write = value_writer(convert)
    for text in SAMPLES[oid]:
        assert write(text) == json_text(convert(text)), (oid, text)


def test_a_column_without_converter_is_a_json_string() -> None:
    write = value_writer(None)
    for text in ["Jane", 'quote " and \\ back', "tab\tnew\nline", "\u00e9\u2603\U0001f600", ""]:
        assert write(text) == json_text(text)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_text_is_written_as_json_dumps_writes_the_float(number: float) -> None:
    write = value_writer(float)
    for text in {repr(number), f"{number:.17g}", f"{number:g}"}:
        assert write(text) == json_text(float(text))


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_any_numeric_text_is_written_exactly(number: Decimal) -> None:
    text = f"{number:f}"  # PostgreSQL prints numerics without an exponent
    assert value_writer(Decimal)(text) == json_text(Decimal(text))


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_integer_text_is_written_as_is(number: int) -> None:
    assert value_writer(int)(str(number)) == str(number)


def relation(*columns: tuple[str, int]) -> pgoutput.Relation:
    return pgoutput.Relation(
        relid=7,
        namespace="public",
        name="things",
        replica_identity="d",
        columns=tuple(pgoutput.Column(name == "id", name, oid, -1) for name, oid in columns),
    )


ALL_TYPES = relation(("id", 20), *((f"c{oid}", oid) for oid in sorted(SAMPLES)), ("note", 25))


def test_a_row_of_every_type_is_the_json_of_the_decoded_row() -> None:
    converters = pgoutput.DEFAULT_CONVERTERS
    writer = RowWriter(ALL_TYPES, converters, ["id"])
    for turn in range(3):  # each sample text of each type, in turn
        values = ("42", *(SAMPLES[oid][turn % len(SAMPLES[oid])] for oid in sorted(SAMPLES)))
        values = (*values, None)
        payload, unchanged = writer.payload(values, toast_as_null=False)
        assert payload == json_text(pgoutput.row_to_dict(ALL_TYPES, values, converters))
        assert unchanged == []


def test_unchanged_toast_is_left_out_of_an_update_and_null_in_a_delete() -> None:
    things = relation(("id", 23), ("body", 25), ("n", 23))
    writer = RowWriter(things, pgoutput.DEFAULT_CONVERTERS, ["id"])
    values = ("1", pgoutput.UNCHANGED_TOAST, "5")
    assert writer.payload(values, toast_as_null=False) == ('{"id":1,"n":5}', ["body"])
    assert writer.payload(values, toast_as_null=True) == ('{"id":1,"body":null,"n":5}', [])
    update = writer.event("update", values, lsn=0x1A2B, xid=9)
    assert update.metadata == (
        '{"table":"things","operation":"update","lsn":"0/1A2B","schema":"public","xid":9,'
        '"unchanged_toast":["body"]}'
    )
    assert update.key == b"things:1"


def test_a_converter_of_the_decoders_own_is_used_for_payload_and_key() -> None:
    things = relation(("id", 23), ("tag", 25))
    converters = {**pgoutput.DEFAULT_CONVERTERS, 23: lambda text: f"#{text}"}
    event = RowWriter(things, converters, ["id"]).event("insert", ("5", "x"), lsn=1, xid=None)
    assert event.payload == '{"id":"#5","tag":"x"}'
    assert event.key == b"things:#5"
    assert '"xid":null' in event.metadata


def test_a_key_column_the_layout_lacks_is_none_in_the_message_key() -> None:
    things = relation(("id", 23), ("tag", 25))
    writer = RowWriter(things, pgoutput.DEFAULT_CONVERTERS, ["id", "tenant"])
    assert writer.event("insert", ("5", "x"), lsn=1, xid=1).key == b"things:5:None"


def test_text_that_does_not_convert_is_named_with_its_column() -> None:
    things = relation(("id", 23), ("price", 1700))
    writer = RowWriter(things, pgoutput.DEFAULT_CONVERTERS, ["id"])
    with pytest.raises(pgoutput.PgOutputDecodeError, match=r"public\.things\.price .*'12,5'"):
        writer.payload(("1", "12,5"), toast_as_null=False)
    with pytest.raises(pgoutput.PgOutputDecodeError, match=r"public\.things\.id .*'one'"):
        writer.key_values(("one", "1"))


def test_a_tuple_of_the_wrong_width_says_the_relation_may_be_out_of_date() -> None:
    writer = RowWriter(relation(("id", 23), ("tag", 25)), pgoutput.DEFAULT_CONVERTERS, ["id"])
    for values in [("1",), ("1", "x", "extra")]:
        with pytest.raises(pgoutput.PgOutputDecodeError, match="out of date"):
            writer.event("insert", values, lsn=1, xid=1)
