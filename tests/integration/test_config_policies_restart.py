"""Policies from the configuration file are applied at every start and not
stored: taking one out of the file takes it out of the broker."""

from __future__ import annotations

from pathlib import Path

from amqpd.testing import BrokerThread


def _policies(broker: BrokerThread) -> list[str]:
    assert broker.broker is not None
    node = broker.broker.node
    return broker.call(lambda: sorted(p.name for p in node.list_policies()))


def test_policy_removed_from_the_config_is_gone_after_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    configured = [{"name": "ttl", "pattern": "^jobs", "definition": {"message-ttl": 5}}]
    with BrokerThread(data_dir=data, policies=configured) as broker:
        assert _policies(broker) == ["ttl"]
        assert broker.broker is not None
        node = broker.broker.node
        broker.call(lambda: node.set_policy("/", "runtime", "^x", {"max-length": 1}))
    with BrokerThread(data_dir=data) as broker:
        # the runtime policy was stored; the configured one was not
        assert _policies(broker) == ["runtime"]
