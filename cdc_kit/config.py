"""Settings for every part of cdc-kit, read from the environment and an optional `.env` file.

One object answers "where is PostgreSQL, the broker and ClickHouse, and what are the topics
called?" so that notebooks, the capture service and the router never disagree. Switching from
the embedded stack to the docker stack is one variable: `CDC_KIT_MODE=docker`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Ports of the two stacks. Embedded ones are unusual on purpose, so they rarely collide
#: with a PostgreSQL/Kafka/ClickHouse a learner already runs; docker ones match the seed.
DEFAULT_PORTS: dict[str, dict[str, int]] = {
    "embedded": {"pg_port": 54329, "kafka_port": 19092, "clickhouse_port": 18123},
    "docker": {"pg_port": 5433, "kafka_port": 19092, "clickhouse_port": 8123},
}


#: In the state folder: this lab's own ports (with CDC_KIT_PORTS=auto) and credentials,
#: written by `up`, readable by its owner only.
LAB_FILE = "lab.json"
#: What a lab file may supply (when not set explicitly); its ports count with ports=auto only.
LAB_PORTS = ("pg_port", "kafka_port", "clickhouse_port")
LAB_CREDENTIALS = ("pg_password", "clickhouse_user", "clickhouse_password")


def _repo_root() -> Path:
    """The folder holding the cdc_kit package (the repository root in a checkout)."""
    return Path(__file__).resolve().parent.parent


def read_lab(home: Path) -> dict[str, Any]:
    """The lab file of a state folder ({} if there is none yet, or it cannot be read)."""
    try:
        return json.loads((Path(home) / LAB_FILE).read_text())
    except (OSError, ValueError):
        return {}


class Settings(BaseSettings):
    """Everything a cdc-kit component needs to find the others.

    Every field can be set as `CDC_KIT_<FIELD>` (e.g. `CDC_KIT_PG_PORT=55432`); `.env.example`
    lists them. Ports left unset get the defaults of the chosen mode; DSNs left unset are built
    from host, port, user and database.
    """

    model_config = SettingsConfigDict(
        env_prefix="CDC_KIT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    mode: Literal["embedded", "docker"] = "embedded"
    home: Path = Field(default_factory=lambda: _repo_root() / ".cdc_kit")
    #: "fixed": the documented ports. "auto" (for shared workshop servers): each lab picks free
    #: loopback ports the first time it starts and keeps them in its state folder.
    ports: Literal["fixed", "auto"] = "fixed"

    # PostgreSQL (the OLTP source)
    pg_host: str = "127.0.0.1"
    pg_port: int | None = None
    pg_user: str = "postgres"
    pg_password: str = ""
    pg_database: str = "sqlmodel_db"
    pg_dsn: str | None = None
    #: Unprivileged user that owns and runs the embedded server when cdc-kit runs as root.
    pg_run_as: str = Field(
        default="nobody",
        validation_alias=AliasChoices("pg_run_as", "CDC_KIT_PG_RUN_AS", "PG_RUN_AS"),
    )

    #: libpq's sslmode for every connection the kit opens (replication included). Unset: libpq's
    #: own default (`prefer`, or $PGSSLMODE). Managed servers want `verify-full`.
    pg_sslmode: (
        Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None
    ) = None
    #: CA bundle that signed the server's certificate (verify-ca/verify-full).
    pg_sslrootcert: Path | None = None

    # Kafka-protocol broker
    kafka_host: str = "127.0.0.1"
    kafka_port: int | None = None
    kafka_bootstrap: str | None = None
    #: PLAINTEXT for the embedded broker and compose; SASL_SSL for Confluent and Redpanda Cloud.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: Used with SASL_*: PLAIN (Confluent Cloud API keys) or SCRAM (Redpanda Cloud users).
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    #: CA bundle for SSL/SASL_SSL; unset: the system's trusted CAs (enough for the clouds).
    kafka_ssl_cafile: Path | None = None
    #: Replicas of the topics the kit creates: 1 for a single broker, 3 on the clouds.
    kafka_replication_factor: int = Field(default=1, ge=1)

    # ClickHouse (HTTP interface)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int | None = None
    clickhouse_user: str = "default"
    clickhouse_password: str = ""
    clickhouse_database: str = "local"
    #: HTTPS instead of HTTP (ClickHouse Cloud: port 8443).
    clickhouse_secure: bool = False
    #: Check the server's certificate and name (only turn off to diagnose).
    clickhouse_verify: bool = True
    #: CA bundle for HTTPS; unset: the system's trusted CAs.
    clickhouse_ca_file: Path | None = None
    #: Certificate and key: the embedded endpoint then serves HTTPS instead of HTTP.
    clickhouse_tls_cert: Path | None = None
    clickhouse_tls_key: Path | None = None

    # CDC names
    cdc_topic: str = "sqlmodel_cdc_events"
    dlq_topic: str = "unknown_event_dead_letter"
    slot_name: str = "cdc_kit_slot"
    publication_name: str = "cdc_kit_pub"
    #: Consumer group of the router; its written progress is stored under this name.
    router_group: str = "cdc_kit_router"
    #: When capture may confirm a change to PostgreSQL's slot: once the broker acked it
    #: ("broker", enough for a durable broker), or once the router wrote it to ClickHouse
    #: ("router", needed with the embedded memory-only broker). Default: by mode.
    confirm_after: Literal["broker", "router"] | None = None

    #: Fields given explicitly (environment, .env, arguments): the rest is derived.
    _explicit: set[str] = PrivateAttr(default_factory=set)

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("pg_sslmode", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator(
        "pg_sslrootcert", "kafka_ssl_cafile", "clickhouse_ca_file", "clickhouse_tls_cert",
        "clickhouse_tls_key", mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        """Settings that cannot work together fail at once, naming the variable to fix."""
        if self.kafka_security_protocol.startswith("SASL_") and not self.kafka_sasl_username:
            raise ValueError(
                f"CDC_KIT_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "CDC_KIT_KAFKA_SASL_USERNAME and CDC_KIT_KAFKA_SASL_PASSWORD"
            )
        for name in ("pg_sslrootcert", "kafka_ssl_cafile", "clickhouse_ca_file",
                     "clickhouse_tls_cert", "clickhouse_tls_key"):  # fmt: skip
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().is_file():
                raise ValueError(f"CDC_KIT_{name.upper()}={path}: no such file")
        if (self.clickhouse_tls_cert is None) != (self.clickhouse_tls_key is None):
            raise ValueError("set both CDC_KIT_CLICKHOUSE_TLS_CERT and CDC_KIT_CLICKHOUSE_TLS_KEY")
        return self

    @model_validator(mode="after")
    def _fill_derived(self) -> Settings:
        self._explicit = set(self.model_fields_set)
        self.home = Path(self.home).expanduser().absolute()
        if self.mode == "embedded":
            lab = read_lab(self.home)
            for name in LAB_CREDENTIALS:  # an explicit empty password counts as not set
                if lab.get(name) and (name not in self._explicit or not getattr(self, name)):
                    setattr(self, name, lab[name])
            for name in LAB_PORTS if self.ports == "auto" else ():
                if name not in self._explicit and lab.get(name):
                    setattr(self, name, lab[name])
        defaults = DEFAULT_PORTS[self.mode]
        for name, port in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, port)
        if self.pg_dsn is None:
            auth = quote(self.pg_user, safe="")
            if self.pg_password:
                auth += ":" + quote(self.pg_password, safe="")
            self.pg_dsn = f"postgresql://{auth}@{self.pg_host}:{self.pg_port}/{self.pg_database}"
        if self.confirm_after is None:
            self.confirm_after = "router" if self.mode == "embedded" else "broker"
        if self.kafka_bootstrap is None:
            self.kafka_bootstrap = f"{self.kafka_host}:{self.kafka_port}"
        return self

    def is_explicit(self, name: str) -> bool:
        """True if `name` was given (environment, .env, arguments), not derived or defaulted."""
        return name in self._explicit

    def reloaded(self) -> Settings:
        """The same settings with what is derived made again (after `up` wrote the lab file):
        the lab's ports and credentials, and the DSN and bootstrap built from them."""
        derived = {*LAB_PORTS, *LAB_CREDENTIALS, "pg_dsn", "kafka_bootstrap", "confirm_after"}
        kept = {
            name: getattr(self, name)
            for name in type(self).model_fields
            if name in self._explicit or name not in derived
        }
        return type(self)(**kept)

    @property
    def pg_sqlalchemy_url(self) -> str:
        """The DSN in the form SQLAlchemy/SQLModel wants (explicit psycopg2 driver)."""
        dsn = str(self.pg_dsn)
        for prefix in ("postgresql://", "postgres://"):
            if dsn.startswith(prefix):
                return "postgresql+psycopg2://" + dsn[len(prefix) :]
        return dsn


def _lab_stamp(home: Path) -> int:
    """When the lab file of a state folder last changed (0: none)."""
    try:
        return (home / LAB_FILE).stat().st_mtime_ns
    except OSError:
        return 0


#: (CDC_KIT_* environment, lab file stamp, settings) of the last get_settings().
_cached: tuple[tuple[tuple[str, str], ...], int, Settings] | None = None


def get_settings(**overrides: object) -> Settings:
    """The current settings; keyword arguments override single fields (handy in tests).

    Cached per environment and lab file, so changing `CDC_KIT_*` variables (as tests do) or
    a first `up` (which writes the lab's ports and credentials) is honoured. The lab file is
    looked for in the state folder the settings resolved (from the environment or `.env`).
    """
    global _cached
    if overrides:
        return Settings(**overrides)  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if k.startswith("CDC_KIT_") or k == "PG_RUN_AS"}
    key = tuple(sorted(env.items()))
    if _cached is not None:
        cached_key, stamp, settings = _cached
        if cached_key == key and stamp == _lab_stamp(settings.home):
            return settings
    settings = Settings()
    _cached = (key, _lab_stamp(settings.home), settings)
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment for a child process that must see exactly these settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CDC_KIT_")}
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):  # str() of a SecretStr is its mask
            value = value.get_secret_value()
        if value is not None:
            env[f"CDC_KIT_{name.upper()}"] = str(value)
    return env
