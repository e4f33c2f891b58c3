"""The three-broker cluster (deploy/local/kafka.sh KAFKA_BROKERS=3) against Kafka's own system tests:
acked writes survive leader kills exactly once, transactions survive a broker kill with nothing
duplicated or lost under read_committed, the project's topics are replicated as configured, and a
paused broker leaves the ISR and comes back. The module starts one cluster of its own (temporary
ORDERSTATUS_LOCAL_DIR, free ports) and stops it at the end; the shared broker is never touched."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from services.adapters import kafka_config
from services.adapters.kafka_acls import apply_acls
from services.adapters.kafka_admin import ensure_topics
from services.adapters.kafka_principals import Role
from services.adapters.settings import Settings
from tests.kafka_cluster import KafkaCluster, kafka_cluster_fixture
from tests.topics import read_topic

REPLICA_LAG_MAX_MS = 3000
"""Short, so a paused follower drops out of the ISR within seconds (Kafka's default is 30 s)."""
BROKER_SESSION_TIMEOUT_MS = 5000
"""A killed broker is fenced (its leaderships move) after this; Kafka's 9 s would cost each of the
module's kills four seconds more. Above the ISR lag: a paused follower leaves the ISR by the lag
rule first, before the controller fences it."""

pytestmark = pytest.mark.timeout(600)  # the module's cluster starts with its first test

cluster = kafka_cluster_fixture(
    scope="module",
    replica_lag_max_ms=REPLICA_LAG_MAX_MS,
    broker_session_timeout_ms=BROKER_SESSION_TIMEOUT_MS,
)


@pytest.fixture(scope="module")
def operator(cluster: KafkaCluster) -> Settings:
    return cluster.settings(Settings(environment="test"))


def create_topic(cluster: KafkaCluster, partitions: int = 1) -> str:
    """A topic of the test's own on all three brokers, min.insync.replicas 2, fully in sync."""
    name = f"cluster-test-{uuid.uuid4().hex[:8]}"
    spec = NewTopic(name, partitions, 3, config={"min.insync.replicas": "2"})
    cluster.admin().create_topics([spec])[name].result(30)
    for p in range(partitions):
        cluster.wait_for(f"{name}[{p}] led", lambda p=p: cluster.leader_of(name, p) > 0, 30)
        cluster.wait_in_sync(name, p)
    return name


class AckedProducer:
    """An idempotent acks=all producer writing numbered records in a thread of its own, noting
    which ones the brokers acknowledged (and what else they answered)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            {
                **kafka_config.client(settings),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                # A leader election takes seconds; nothing acked may be given up meanwhile.
                "delivery.timeout.ms": 120_000,
                "log_level": 0,
            }
        )
        self.acked: list[int] = []
        self.failed: list[str] = []
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="acked-producer", daemon=True)

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.acked.append(int(msg.value()))
        else:
            self.failed.append(str(err))

    def _run(self) -> None:
        while not self.stop.is_set():  # bursts of 20, at most ~400 records/s: a busy machine
            for _ in range(20):
                try:
                    self.producer.produce(
                        self.topic, str(self.sent).encode(), on_delivery=self._delivered
                    )
                    self.sent += 1
                except BufferError:
                    break
            self.producer.poll(0)
            self.stop.wait(0.05)

    def __enter__(self) -> AckedProducer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        assert self.producer.flush(120) == 0, "records still unanswered after 120 s"


def consumed_values(settings: Settings, topic: str) -> list[int]:
    return [int(m.value()) for m in read_topic(settings, topic)]


def test_acked_records_survive_repeated_leader_kills_exactly_once(
    cluster: KafkaCluster, operator: Settings
) -> None:
    """Kafka's replication test: kill -9 the partition leader and restart it, several times, under
    an idempotent acks=all producer: every acked record is read back exactly once, in order."""
    topic = create_topic(cluster)
    leaders = []
    with AckedProducer(operator, topic) as producer:
        for _round in range(3):
            time.sleep(1.5)
            leader = cluster.leader_of(topic, 0)
            leaders.append(leader)
            sent_at_kill = producer.sent
            cluster.kill_node(leader)
            elected = cluster.wait_for(
                "a new leader", lambda old=leader: cluster.leader_of(topic, 0) not in (old, -1)
            )
            # Acks come in order (idempotence): one past the kill's count is a record sent after.
            resumed = cluster.wait_for(
                "acks after the kill", lambda n=sent_at_kill: max(producer.acked, default=-1) > n
            )
            started = time.monotonic()
            cluster.start_node(leader)
            restarted = time.monotonic() - started
            in_sync = cluster.wait_in_sync(topic, 0)
            print(
                f"leader {leader} killed: new leader seen after {elected:.1f}s, acks of new "
                f"records after {resumed:.1f}s more; restart {restarted:.1f}s, in sync "
                f"{in_sync:.1f}s after"
            )
    assert producer.failed == []
    assert len(set(leaders)) >= 2, f"the leadership should have moved: {leaders}"
    consumed = consumed_values(operator, topic)
    duplicated = [v for v, n in Counter(consumed).items() if n > 1]
    assert duplicated == []
    assert set(producer.acked) - set(consumed) == set(), "acked records lost"
    assert consumed == sorted(consumed), "records out of order"
    assert len(producer.acked) == producer.sent > 500


def test_a_controller_kill_elects_another_and_metadata_changes_go_on(
    cluster: KafkaCluster, operator: Settings
) -> None:
    """kill -9 of the active controller (every node is one of the three voters): the two left elect
    a new quorum leader, which takes metadata changes (a topic created) while acks=all writes go on;
    the killed node comes back as a follower of the quorum."""
    topic = create_topic(cluster)
    controller = cluster.active_controller()
    with AckedProducer(operator, topic) as producer:
        cluster.kill_node(controller)
        try:
            elected = cluster.wait_for(
                "a new active controller", lambda: cluster.active_controller(5) != controller, 30
            )
            successor = cluster.active_controller()
            created = create_topic_rf2(cluster)
            acked = len(producer.acked)
            cluster.wait_for("acks under the new controller", lambda: len(producer.acked) > acked)
        finally:  # the module's later tests need all three
            cluster.start_node(controller)
    print(f"controller {controller} killed: node {successor} leads the quorum after {elected:.1f}s")
    assert successor != controller
    assert producer.failed == []
    assert len(cluster.replicas(created, 0)) == 2
    assert len(cluster.admin().list_topics(timeout=10).brokers) == cluster.nodes


def create_topic_rf2(cluster: KafkaCluster) -> str:
    """With one broker down, a topic on two replicas: a metadata write the controller must take."""
    name = f"cluster-rf2-{uuid.uuid4().hex[:8]}"
    cluster.admin(fresh=True).create_topics([NewTopic(name, 1, 2)])[name].result(30)
    return name


def transaction_coordinator(cluster: KafkaCluster, transactional_id: str) -> int:
    """The broker leading the __transaction_state partition of `transactional_id` (Kafka's
    Utils.abs(String.hashCode) % transaction.state.log.num.partitions: the cluster's
    internal_partitions)."""
    h = 0
    for ch in transactional_id:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= 1 << 31 else h
    partition = (0 if h == -(1 << 31) else abs(h)) % cluster.internal_partitions
    return cluster.leader_of("__transaction_state", partition)


def test_transactions_survive_a_coordinator_kill_with_no_duplicate_and_nothing_lost(
    cluster: KafkaCluster, operator: Settings
) -> None:
    """Kafka's transactions test, the worker's way: a copier consumes, produces the copies and
    sends its offsets in one transaction, read_committed, while the broker that is its transaction
    coordinator is killed (-9) and restarted. The output holds every input record exactly once."""
    source, target = create_topic(cluster), create_topic(cluster)
    records = 1000
    feed = Producer({**kafka_config.client(operator), "acks": "all", "enable.idempotence": True})
    for i in range(records):
        feed.produce(source, str(i).encode())
        feed.poll(0)
    assert feed.flush(60) == 0

    group = f"cluster-copier-{uuid.uuid4().hex[:6]}"
    transactional_id = f"{group}.1"
    consumer = Consumer(
        {
            **kafka_config.client(operator),
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "log_level": 0,
        }
    )
    producer = Producer(
        {
            **kafka_config.client(operator),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 30_000,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 1,
            "log_level": 0,
        }
    )
    producer.init_transactions(60)
    source_partition = TopicPartition(source, 0, 0)
    consumer.assign([source_partition])
    coordinator = transaction_coordinator(cluster, transactional_id)
    killer = threading.Thread(target=restart_after_kill, args=(cluster, coordinator))
    committed = aborted = 0
    position = 0
    deadline = time.monotonic() + 90
    while position < records and time.monotonic() < deadline:
        # The kill from a thread of its own, a third of the way in: it lands in the middle of
        # some transaction, and the copy goes on while the node is down and while it restarts.
        if not killer.is_alive() and killer.ident is None and position >= records // 3:
            killer.start()
        batch = [m for m in consumer.consume(20, timeout=1) if m.error() is None]
        if not batch:
            continue
        producer.begin_transaction()
        try:
            for message in batch:
                producer.produce(target, message.value())
            next_offset = batch[-1].offset() + 1
            producer.send_offsets_to_transaction(
                [TopicPartition(source, 0, next_offset)], consumer.consumer_group_metadata(), 30
            )
            commit(producer)
            committed += 1
            position = next_offset
        except KafkaException as exc:
            error = exc.args[0]
            assert error.txn_requires_abort(), f"not abortable: {error}"
            producer.abort_transaction(60)
            aborted += 1
            consumer.seek(TopicPartition(source, 0, position))  # copy the batch again
    killer.join()
    consumer.close()
    assert position == records, f"copied {position} of {records} in 90 s"
    assert killer.ident is not None, "the coordinator was never killed"
    copies = consumed_values(operator, target)
    assert Counter(copies) == Counter(range(records)), (
        f"duplicated {[v for v, n in Counter(copies).items() if n > 1][:10]}, "
        f"lost {sorted(set(range(records)) - set(copies))[:10]} "
        f"({committed} transactions committed, {aborted} aborted)"
    )


def commit(producer: Producer) -> None:
    """commit_transaction, retried while its outcome is unknown (a retriable error: the
    coordinator moved); an abortable error is raised for the caller to abort."""
    for _attempt in range(10):
        try:
            producer.commit_transaction(30)
            return
        except KafkaException as exc:
            if not exc.args[0].retriable():
                raise
            time.sleep(0.5)
    raise AssertionError("commit_transaction never completed")


def restart_after_kill(cluster: KafkaCluster, node: int) -> None:
    cluster.kill_node(node)
    time.sleep(1)
    cluster.start_node(node)


def test_project_topics_are_replicated_and_every_principal_logs_in_on_every_node(
    cluster: KafkaCluster, operator: Settings
) -> None:
    """ensure_topics on the cluster: replication factor 3 and min.insync.replicas 2 on every
    project topic; and after the ACLs, each principal's SCRAM login works on each broker."""
    settings = operator.model_copy(update={"kafka_topic_prefix": f"ct{uuid.uuid4().hex[:6]}"})
    created = ensure_topics(settings)
    assert len(created) == 4
    apply_acls(settings)
    admin = cluster.admin()
    metadata = admin.list_topics(timeout=10)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in created]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result(30)["min.insync.replicas"].value == "2", resource.name
        partitions = metadata.topics[resource.name].partitions.values()
        assert {len(p.replicas) for p in partitions} == {3}, resource.name
    for role in Role:
        for port in cluster.ports:
            login = cluster.settings(Settings(environment="test"), role).model_copy(
                update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"}
            )
            as_role = AdminClient({**kafka_config.admin(login), "log_level": 0})
            assert as_role.list_topics(timeout=10).brokers, f"{role} on port {port}"


def test_a_paused_broker_leaves_the_isr_and_rejoins_after_resume(
    cluster: KafkaCluster, operator: Settings
) -> None:
    """SIGSTOP a follower (not the active controller, so this is the ISR rule, not a failover):
    it leaves the ISR after replica.lag.time.max.ms while acks=all writes go on with two in sync and
    the leader reports an under-replicated partition; after SIGCONT it is back in the ISR and the
    gauge is back to 0. (The leader's IsrShrinks/IsrExpands counters are printed, not asserted: a
    change counts only when the controller's AlterPartition answer reaches the leader before the
    same change replayed from the metadata log, and a shrink the controller makes itself on
    fencing a silent broker never counts; docs/kafka-cluster.md.)"""
    topic = create_topic(cluster)
    leader = cluster.leader_of(topic, 0)
    controller = cluster.active_controller()
    followers = [n for n in range(1, cluster.nodes + 1) if n != leader]
    paused = next(n for n in followers if n != controller)
    counts_before = {
        name: cluster.metric(leader, f"kafka_server_replicamanager_{name}_total")
        for name in ("isrshrinks", "isrexpands")
    }
    with AckedProducer(operator, topic) as producer:
        cluster.pause_node(paused)
        try:
            out_after = cluster.wait_for(
                f"node {paused} out of the ISR",
                lambda: paused not in cluster.replicas_in_sync(topic, 0),
                REPLICA_LAG_MAX_MS / 1000 * 4,
            )
            under = cluster.metric(leader, "kafka_server_replicamanager_underreplicatedpartitions")
            acked_while_out = len(producer.acked)
            cluster.wait_for("acks with two in sync", lambda: len(producer.acked) > acked_while_out)
        finally:
            cluster.resume_node(paused)
        back_after = cluster.wait_in_sync(topic, 0)
    print(f"out of the ISR after {out_after:.1f}s paused; back {back_after:.1f}s after resume")
    assert producer.failed == []
    assert under >= 1
    changes = {
        name: cluster.metric(leader, f"kafka_server_replicamanager_{name}_total") - before
        for name, before in counts_before.items()
    }
    print(
        f"the leader counted ISR changes {changes} (the counters can miss some, see the docstring)"
    )
    cluster.wait_for(
        "no under-replicated partition on the leader",
        lambda: (
            cluster.metric(leader, "kafka_server_replicamanager_underreplicatedpartitions") == 0
        ),
        30,
    )
