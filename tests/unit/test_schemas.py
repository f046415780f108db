"""Every schema version reads data written by every earlier version (transitive)."""

import io
import itertools

import fastavro
import pytest

import schemas


def _example(schema: dict) -> dict:
    """A record that fills every field of ``schema`` with a value of its (first non-null) type."""
    out = {}
    for field in schema["fields"]:
        ftype = field["type"]
        branches = ftype if isinstance(ftype, list) else [ftype]
        branch = next((b for b in branches if b != "null"), "null")
        if isinstance(branch, dict) and branch.get("type") == "record":
            out[field["name"]] = _example(branch)
        elif branch == "long":
            out[field["name"]] = 42
        elif branch == "null":
            out[field["name"]] = None
        else:
            out[field["name"]] = f"{field['name']}-value"
    return out


PAIRS = [
    (dataset, old, new)
    for dataset in schemas.DATASETS
    for old, new in itertools.combinations_with_replacement(schemas.versions(dataset), 2)
]


@pytest.mark.parametrize(("dataset", "writer_version", "reader_version"), PAIRS)
def test_every_version_reads_every_earlier_version(dataset, writer_version, reader_version):
    writer = schemas.load_schema(dataset, writer_version)
    reader = schemas.load_schema(dataset, reader_version)
    record = _example(schemas.raw_schema(dataset, writer_version))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, record)
    buf.seek(0)
    read = fastavro.schemaless_reader(buf, writer, reader)
    for name in schemas.field_names(dataset, writer_version):
        assert read[name] == record[name]
    for name in set(schemas.field_names(dataset, reader_version)) - set(record):
        assert read[name] is None  # added later: present with its default


def test_payment_versions_cover_the_contract():
    assert schemas.versions("payment_event") == (1, 2, 3)
    assert "device_id" in schemas.field_names("payment_event", 2)
    v3 = {f["name"]: f for f in schemas.raw_schema("payment_event", 3)["fields"]}
    assert v3["billing_postal"]["type"][0] == "string"  # the old shape stays readable


def test_unknown_dataset_or_version_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dataset"):
        schemas.versions("payments")
    with pytest.raises(ValueError, match="no schema version 9"):
        schemas.raw_schema("chargeback", 9)
