"""kubitect_core.remote parts that need no network: pinning file, ssh_config, pool bound, errors."""

from __future__ import annotations

import asyncio
import stat

import asyncssh
import pytest

from kubitect_core import remote
from kubitect_core.remote import NodePool, RemoteError


def _key():
    return asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


def test_pinning_file_roundtrip(tmp_path):
    kh = tmp_path / "sub" / "known_hosts"
    a, b = _key(), _key()
    assert remote.pinned_keys(kh, "10.0.0.5") == []
    remote.pin_key(kh, "10.0.0.5", 22, a)
    remote.pin_key(kh, "10.0.0.5", 22, a)  # same key twice: one line
    remote.pin_key(kh, "10.0.0.5", 2222, b)
    remote.pin_key(kh, "10.0.0.50", 22, b)
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    lines = kh.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["10.0.0.5", "[10.0.0.5]:2222", "10.0.0.50"]
    assert remote.pinned_keys(kh, "10.0.0.5") == [a]
    assert remote.pinned_keys(kh, "10.0.0.5", 2222) == [b]
    assert remote.pinned_keys(kh, "10.0.0.6") == []
    assert remote.forget_host(kh, "10.0.0.5") is True
    assert remote.forget_host(kh, "10.0.0.5") is False
    assert remote.pinned_keys(kh, "10.0.0.5") == []
    assert remote.pinned_keys(kh, "10.0.0.50") == [b]
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600


def test_export_ssh_config(tmp_path):
    cfg = remote.export_ssh_config(
        tmp_path / "ssh_config", [("k8s-lb-1", "10.10.0.5"), ("k8s-master-1", "10.10.0.10")],
        "k8s", tmp_path / "id_ed25519", tmp_path / "known_hosts",
    )
    text = cfg.read_text()
    blocks = text.split("\n\n")[1:]
    assert len(blocks) == 2
    first = [ln.strip() for ln in blocks[0].splitlines()]
    assert first[0] == "Host k8s-lb-1 10.10.0.5"
    for expected in ("HostName 10.10.0.5", "User k8s", f"IdentityFile {tmp_path / 'id_ed25519'}",
                     "StrictHostKeyChecking yes", f"UserKnownHostsFile {tmp_path / 'known_hosts'}",
                     "IdentitiesOnly yes", "BatchMode yes"):
        assert expected in first
    assert "HostName 10.10.0.10" in blocks[1]


def test_export_ssh_config_quotes_paths_with_spaces(tmp_path):
    d = tmp_path / "my home"
    cfg = remote.export_ssh_config(tmp_path / "c", [("n", "10.0.0.1")], "u", d / "key", d / "kh")
    assert f'IdentityFile "{d / "key"}"' in cfg.read_text()


def test_pool_each_keeps_order_bound_and_reports_failures(tmp_path):
    async def scenario():
        pool = NodePool(user="u", key=tmp_path / "k", known_hosts=tmp_path / "kh", limit=3)
        running = peak = 0

        async def job(i):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01 * (10 - i))
            running -= 1
            if i == 7:
                raise RemoteError(f"node {i} failed")
            return i * 2

        mixed = await pool.each(range(10), job, return_exceptions=True)
        with pytest.raises(RemoteError, match="node 7"):
            await pool.each(range(10), job)
        return mixed, peak, running

    mixed, peak, running = asyncio.run(scenario())
    assert [m for i, m in enumerate(mixed) if i != 7] == [i * 2 for i in range(10) if i != 7]
    assert isinstance(mixed[7], RemoteError)
    assert peak == 3 and running == 0  # all finished before the failure was raised


def test_connect_with_unreadable_key_names_the_node_not_the_key(tmp_path):
    bad = tmp_path / "id"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
    with pytest.raises(RemoteError) as err:
        asyncio.run(remote.connect("10.9.9.9", name="k8s-lb-1", user="u", key=bad,
                                   known_hosts=tmp_path / "kh"))
    assert "k8s-lb-1" in str(err.value) and "10.9.9.9" in str(err.value)
    assert "not a key" not in str(err.value)


def test_export_ssh_config_refuses_a_control_dir_too_long_for_a_socket(tmp_path):
    with pytest.raises(ValueError, match="too long"):
        remote.export_ssh_config(tmp_path / "c", [("n", "10.0.0.1")], "k8s", tmp_path / "k", tmp_path / "kh",
                                 control_dir=tmp_path / ("x" * 80))
