"""How many JetStream replicas ``nats.replicas: auto`` picks, and what config accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from omnillm.actors.boards import Boards
from omnillm.bus.connection import MAX_AUTO_REPLICAS, Bus, cluster_replicas
from omnillm.bus.usage import STREAM
from omnillm.config import load_config, resolve
from omnillm.embedded import EmbeddedNats
from omnillm.errors import ConfigError

LONE: dict[str, Any] = {"server_name": "a", "jetstream": True, "max_payload": 8388608}


def clustered(*urls: str) -> dict[str, Any]:
    return {**LONE, "cluster": "omni", "connect_urls": list(urls)}


def test_a_lone_server_gets_one_replica() -> None:
    assert cluster_replicas(LONE) == 1


def test_a_lone_server_gets_one_replica_whatever_urls_it_lists() -> None:
    info = {**LONE, "connect_urls": ["10.0.0.1:4222", "10.0.0.2:4222"]}
    assert cluster_replicas(info) == 1  # no cluster name: not clustered


@pytest.mark.parametrize(
    ("urls", "replicas"),
    [
        (["n1:4222"], 1),
        (["n1:4222", "n2:4222"], 2),
        (["n1:4222", "n3:4222", "n2:4222"], 3),
        ([f"n{i}:4222" for i in range(5)], MAX_AUTO_REPLICAS),
    ],
)
def test_a_clustered_server_gets_one_replica_per_node_up_to_three(
    urls: list[str], replicas: int
) -> None:
    assert cluster_replicas(clustered(*urls)) == replicas


def test_a_node_listed_twice_counts_once() -> None:
    assert cluster_replicas(clustered("n1:4222", "n2:4222", "n1:4222")) == 2


def test_a_cluster_that_advertises_no_urls_gets_one_replica() -> None:
    assert cluster_replicas({**LONE, "cluster": "omni"}) == 1  # no_advertise, or no peer yet
    assert cluster_replicas({**LONE, "cluster": "omni", "connect_urls": None}) == 1


def test_replicas_default_to_auto(tmp_path: Path) -> None:
    assert load_config(cwd=tmp_path).nats.replicas == "auto"


@pytest.mark.parametrize("value", [1, 3, 5])
def test_replicas_may_be_set_from_one_to_five(tmp_path: Path, value: int) -> None:
    path = tmp_path / "omnillm.yaml"
    path.write_text(f"nats: {{replicas: {value}}}\n")
    assert load_config(path).nats.replicas == value


@pytest.mark.parametrize("value", [0, 6, -1])
def test_replicas_out_of_range_are_an_error_naming_the_key(tmp_path: Path, value: int) -> None:
    path = tmp_path / "omnillm.yaml"
    path.write_text(f"nats: {{replicas: {value}}}\n")
    with pytest.raises(ConfigError, match=rf"nats\.replicas: expected auto or 1 to 5, got {value}"):
        load_config(path)


@pytest.mark.anyio
async def test_every_asset_on_a_lone_server_gets_one_replica_under_auto(
    tmp_path: Path,
) -> None:
    with EmbeddedNats(tmp_path / "nats", port=0) as server:
        bus = await Bus.connect(server.url)
        try:
            assert bus.replicas() == 1
            assert bus.replicas(3) == 3  # a number in config is taken as it is
            boards = Boards.for_bus(bus, resolve(load_config(cwd=tmp_path), env={}))
            assert await boards.usage.open()
            info = await bus.nc.jetstream().stream_info(STREAM)
        finally:
            await bus.close()
    assert info.config.num_replicas == 1
