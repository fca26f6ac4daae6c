"""``gateway.workers``: the setting, the flag, and the port every worker's gateway shares."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omnillm.actors.gateway.sockets import check_free, listen
from omnillm.cli import _lone_error, main
from omnillm.config import Config, load_config
from omnillm.errors import ConfigError, NoRouter
from omnillm.workers import MAX_AUTO_WORKERS, worker_count


def test_workers_of_a_group_listen_on_one_port_and_a_second_group_is_refused() -> None:
    first = listen("127.0.0.1", 0, reuse_port=True)
    port = first.getsockname()[1]
    joined = listen("127.0.0.1", port, reuse_port=True)
    try:
        with pytest.raises(OSError, match="in use"):
            check_free("127.0.0.1", port)  # another omni up --workers on this port
        with pytest.raises(OSError, match="in use"):
            listen("127.0.0.1", port)  # a gateway of its own
    finally:
        first.close()
        joined.close()
    check_free("127.0.0.1", port)  # free again once the group is gone


def test_gateway_workers_takes_a_number_or_auto(tmp_path: Path) -> None:
    path = tmp_path / "omnillm.yaml"
    path.write_text("gateway: {workers: auto}\n")
    assert load_config(path, env={}).gateway.workers == "auto"
    assert Config().gateway.workers == 1
    path.write_text("gateway: {workers: 0}\n")
    with pytest.raises(ConfigError, match=r"omnillm.yaml: gateway.workers: expected auto or 1 to"):
        load_config(path, env={})
    path.write_text("gateway: {workers: many}\n")
    with pytest.raises(ConfigError, match=r"gateway.workers: expected .*got 'many'"):
        load_config(path, env={})


def test_auto_is_one_worker_per_usable_cpu_up_to_four() -> None:
    assert worker_count("auto") == min(len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS)
    assert worker_count(3) == 3


def test_a_bad_workers_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["up", "--workers", "none"])
    assert exited.value.code == 2
    assert "--workers: expected a number or auto, got 'none'" in capsys.readouterr().err


def test_an_error_raised_in_a_task_group_is_reported_as_itself() -> None:
    error = NoRouter("nobody")
    assert _lone_error(BaseExceptionGroup("", [ExceptionGroup("", [error])])) is error
    assert _lone_error(ExceptionGroup("", [error, ValueError()])) is None
    assert _lone_error(ExceptionGroup("", [ValueError()])) is None
