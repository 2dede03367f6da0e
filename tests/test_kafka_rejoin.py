"""The mend for kafka-python's rebalance that metadata starts (KAFKA-9815): once a rejoin is needed, it stays
needed until the join completes, also after the leader has computed the assignment."""

from __future__ import annotations

from types import SimpleNamespace

from kafka.consumer.subscription_state import SubscriptionState
from kafka.coordinator.consumer import ConsumerCoordinator

from aestream.kafka.kafka_python import _keep_rejoin_until_done


def _leader(topic: str) -> ConsumerCoordinator:
    """kafka-python's own coordinator, in the state of a leader that joined before its topic had metadata."""
    coordinator = ConsumerCoordinator.__new__(ConsumerCoordinator)
    subscription = SubscriptionState()
    subscription.subscribe(topics=[topic])
    coordinator._subscription = subscription
    coordinator.config = {"group_id": "g", "api_version": (4, 0)}
    coordinator._joined_subscription = {topic}
    coordinator.rejoin_needed = False
    coordinator._assignment_snapshot = {topic: set()}  # the first join: no partitions known
    coordinator._metadata_snapshot = {topic: {0, 1}}  # then the metadata came
    return coordinator


def test_a_rejoin_started_by_metadata_stays_needed_until_the_join_completes() -> None:
    coordinator = _leader("in")
    _keep_rejoin_until_done(SimpleNamespace(_coordinator=coordinator))
    assert coordinator.need_rejoin()
    coordinator._assignment_snapshot = coordinator._metadata_snapshot  # the leader computed the assignment
    assert coordinator.need_rejoin(), "the assignment it received is still to be applied"
    coordinator.rejoin_needed = False  # what kafka-python does when the join completes
    assert not coordinator.need_rejoin()


def test_a_member_with_nothing_to_rejoin_for_is_left_alone() -> None:
    coordinator = _leader("in")
    coordinator._assignment_snapshot = coordinator._metadata_snapshot
    _keep_rejoin_until_done(SimpleNamespace(_coordinator=coordinator))
    assert not coordinator.need_rejoin()
    assert not coordinator.rejoin_needed
