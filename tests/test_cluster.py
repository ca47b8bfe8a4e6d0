"""The cluster (chat/cluster): several servers on one real Valkey are one chat."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import JsonPeer, TextPeer, wait_until
from tests.valkey import Valkey


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    server = Valkey(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def two_nodes(make_server: Any, valkey: Valkey) -> tuple[Any, Any]:
    options = {"cluster_url": valkey.url, "cluster_heartbeat_s": 0.3, "flood_rate": 0}
    return make_server(**options), make_server(**options)


def test_users_on_two_nodes_talk_in_one_room(two_nodes: tuple[Any, Any]) -> None:
    a, b = two_nodes
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    alice.send("hello bob\n")
    assert bob.expect("<alice>") == "<alice> hello bob"
    bob.send("/quit\n")
    alice.expect("*** bob left")
    alice.close()
    bob.close()
