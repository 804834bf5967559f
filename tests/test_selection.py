"""How a per-host command goes through its hosts (tasks/selection.py): a host that is refused
fails alone, an error no other host would escape stops at once, and the end names each failed host."""
from __future__ import annotations

import errno
from types import SimpleNamespace
from typing import Any

import pytest
from doit.exceptions import TaskFailed

from tasks.failures import ClusterWide
from tasks.selection import run_hosts

NAMES = ["a", "b", "c", "d"]


def a_site() -> Any:
    return SimpleNamespace(hosts={n: SimpleNamespace(name=n) for n in NAMES})


def test_a_refused_host_fails_alone_and_the_end_names_each_failed_host(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []

    def action(site: Any, host: Any) -> TaskFailed | None:
        done.append(host.name)
        if host.name in ("a", "c"):
            return TaskFailed(f"provision --only {host.name}: host {host.name}: client.{host.name} exists and cephboot did not create it")
        return None

    got = run_hosts("provision", action, a_site(), NAMES)
    assert done == NAMES, "every host was tried"
    assert isinstance(got, TaskFailed)
    assert got.message.splitlines() == [
        "cephboot: provision: 2 of 4 hosts failed, every other host is done:",
        "provision --only a: host a: client.a exists and cephboot did not create it",
        "provision --only c: host c: client.c exists and cephboot did not create it",
    ]
    assert capsys.readouterr().out.splitlines() == [f"  - provision --only {n}" for n in NAMES]


def test_every_host_done_is_success() -> None:
    assert run_hosts("verify", lambda site, host: None, a_site(), NAMES) is None


def test_a_cluster_wide_error_stops_at_once_and_names_what_had_failed_before(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []

    def action(site: Any, host: Any) -> TaskFailed | None:
        done.append(host.name)
        if host.name == "a":
            return TaskFailed("provision --only a: host a: refused")
        if host.name == "b":
            raise ClusterWide("the cluster did not answer its admin (192.0.2.11): `ceph fsid` exited 1: auth failed")
        return None

    got = run_hosts("provision", action, a_site(), NAMES)
    assert done == ["a", "b"], "nothing after the cluster-wide error"
    assert isinstance(got, TaskFailed)
    assert got.message.splitlines() == [
        "cephboot: provision: the cluster did not answer its admin (192.0.2.11): `ceph fsid` exited 1: auth failed; stopped before c, d",
        "cephboot: provision: 1 of 1 hosts failed:",
        "provision --only a: host a: refused",
    ]
    assert "  - provision --only c" not in capsys.readouterr().out


def test_the_machine_refusing_stops_at_once_and_a_bug_is_not_hidden() -> None:
    def full(site: Any, host: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", f"build/provision/{host.name}.img")

    got = run_hosts("provision", full, a_site(), NAMES)
    assert isinstance(got, TaskFailed)
    assert got.message == "cephboot: provision --only a: build/provision/a.img: No space left on device; stopped before b, c, d"

    def bug(site: Any, host: Any) -> None:
        raise KeyError("rbd")

    with pytest.raises(KeyError):
        run_hosts("provision", bug, a_site(), NAMES)
