"""Table contracts of the curated, analytics and quarantine zones (ARCHITECTURE.md section 4).

Names and columns here are contracts that outside checks use; extra columns
are allowed, renames are migrations. Each table has a natural key (every sink
writes by it, so replays never double count), the column that decides the
lake partition, and an optional ``keep_newer`` rule for tables where an older
record must never overwrite a newer one (KYC: highest version wins).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    name: str  # "<zone>.<table>"
    columns: tuple[tuple[str, str], ...]  # (column, DuckDB/Snowflake-compatible SQL type)
    key: tuple[str, ...]
    partition_by: str | None = None  # a timestamp-text column; lake partition dt=YYYY-MM-DD
    keep_newer: tuple[str, ...] | None = None  # update a matched row only if these columns are greater
    processing_time_columns: tuple[str, ...] = ()  # differ between runs by design (parity ignores them)

    @property
    def zone(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def table(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)


_TS = "VARCHAR"  # canonical UTC text (fixed width: text order = time order), see transforms.timeutil

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        TableSpec(
            "curated.payment_event",
            (
                ("event_id", "VARCHAR"),
                ("merchant_id", "VARCHAR"),
                ("amount_minor", "BIGINT"),
                ("currency", "VARCHAR"),
                ("card_token", "VARCHAR"),
                ("ip_token", "VARCHAR"),
                ("ip_prefix", "VARCHAR"),
                ("billing_postal_masked", "VARCHAR"),
                ("billing_country", "VARCHAR"),
                ("created_at", _TS),
                ("device_token", "VARCHAR"),
                ("user_id", "VARCHAR"),
                ("schema_version", "INTEGER"),
                ("ingested_at", _TS),
            ),
            key=("event_id",),
            partition_by="created_at",
            processing_time_columns=("ingested_at",),
        ),
        TableSpec(
            "curated.chargeback",
            (
                ("charge_id", "VARCHAR"),
                ("merchant_id", "VARCHAR"),
                ("amount_minor", "BIGINT"),
                ("currency", "VARCHAR"),
                ("reason_code", "VARCHAR"),
                ("received_at", _TS),
                ("evidence_status", "VARCHAR"),
                ("schema_version", "INTEGER"),
                ("ingested_at", _TS),
            ),
            key=("charge_id", "received_at"),
            partition_by="received_at",
            processing_time_columns=("ingested_at",),
        ),
        TableSpec(
            "curated.kyc_profile",
            (
                ("user_id", "VARCHAR"),
                ("version", "BIGINT"),
                ("name_token", "VARCHAR"),
                ("dob_year", "INTEGER"),
                ("address_country", "VARCHAR"),
                ("document_type", "VARCHAR"),
                ("verification_status", "VARCHAR"),
                ("updated_at", _TS),
                ("schema_version", "INTEGER"),
                ("ingested_at", _TS),
            ),
            key=("user_id",),
            keep_newer=("version", "updated_at"),
            processing_time_columns=("ingested_at",),
        ),
        TableSpec(
            "analytics.fraud_features",
            (
                ("event_id", "VARCHAR"),
                ("card_token", "VARCHAR"),
                ("ip_token", "VARCHAR"),
                ("merchant_id", "VARCHAR"),
                ("created_at", _TS),
                ("card_txn_count_5m", "BIGINT"),
                ("card_txn_count_1h", "BIGINT"),
                ("card_amount_sum_1h", "BIGINT"),
                ("card_distinct_merchants_24h", "BIGINT"),
                ("ip_txn_count_5m", "BIGINT"),
                ("merchant_txn_count_1h", "BIGINT"),
                ("late", "BOOLEAN"),
                ("computed_at", _TS),
            ),
            key=("event_id",),
            partition_by="created_at",
            processing_time_columns=("computed_at",),
        ),
        TableSpec(
            "analytics.finance_hourly",
            (
                ("merchant_id", "VARCHAR"),
                ("currency", "VARCHAR"),
                ("hour", _TS),
                ("payment_count", "BIGINT"),
                ("gross_amount_minor", "BIGINT"),
                ("chargeback_count", "BIGINT"),
                ("chargeback_amount_minor", "BIGINT"),
            ),
            key=("merchant_id", "currency", "hour"),
            partition_by="hour",
        ),
    )
}

for _dataset in ("payment_event", "chargeback", "kyc_profile"):
    TABLES[f"quarantine.{_dataset}"] = TableSpec(
        f"quarantine.{_dataset}",
        (
            ("source", "VARCHAR"),
            ("position", "VARCHAR"),
            ("reason", "VARCHAR"),
            ("schema_version", "INTEGER"),
            ("ingested_at", _TS),
            ("payload_encrypted", "VARCHAR"),
            ("key_version", "INTEGER"),
        ),
        key=("source", "position", "reason"),
        processing_time_columns=("ingested_at",),
    )


#: the tables derived from input (not quarantine): what replays and parity checks compare
DERIVED_TABLES = (
    "curated.payment_event",
    "curated.chargeback",
    "curated.kyc_profile",
    "analytics.fraud_features",
    "analytics.finance_hourly",
)
