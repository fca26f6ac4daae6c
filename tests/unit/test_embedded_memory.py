"""The embedded nats-server's memory settings: GOGC=50 unless the environment decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnillm.embedded import EmbeddedNats

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="reads a process's environment in /proc"
)


def environment_of(server: EmbeddedNats) -> dict[str, str]:
    assert server.process is not None
    raw = Path(f"/proc/{server.process.pid}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


@pytest.fixture(autouse=True)
def no_go_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)


def test_the_embedded_server_collects_garbage_at_half_the_go_default(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path, port=0) as server:
        seen = environment_of(server)
    assert seen["GOGC"] == "50"


@pytest.mark.parametrize(
    ("setting", "gogc"), [({"GOGC": "200"}, "200"), ({"GOMEMLIMIT": "256MiB"}, None)]
)
def test_a_go_memory_setting_of_the_operator_is_left_as_it_is(
    tmp_path: Path, setting: dict[str, str], gogc: str | None
) -> None:
    with EmbeddedNats(tmp_path, port=0, env=setting) as server:
        seen = environment_of(server)
    assert seen.get("GOGC") == gogc
    assert seen.items() >= setting.items()
