"""Machine checks: key files named by the config must exist (with ~ expanded)."""

from __future__ import annotations

from cfgedit import SEED

from kubitect_core.config import load_config, preflight


def test_missing_keyfiles_are_reported_with_position(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    issues = preflight(load_config(SEED))
    assert len(issues) == 5
    assert issues[0].path == "hosts[0].connection.ssh.keyfile"
    assert str(tmp_path / ".ssh" / "id_rsa_ha") in issues[0].message
    assert "keyfile:" in SEED.read_text().splitlines()[issues[0].line - 1]


def test_existing_keyfiles_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa_ha").write_text("key")
    assert preflight(load_config(SEED)) == []


def test_private_key_and_its_pub_half(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    key = tmp_path / "node_key"
    key.write_text("private")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("hosts:\n  - name: h\n    connection:\n      type: local\ncluster:\n  name: c\n"
                   "  network:\n    cidr: 10.0.0.0/24\n  nodeTemplate:\n    ssh:\n"
                   f"      privateKeyPath: {key}\n  nodes:\n    master:\n      instances:\n        - id: 1\n")
    issues = preflight(load_config(cfg))
    assert [i.path for i in issues] == ["cluster.nodeTemplate.ssh.privateKeyPath"]
    assert "node_key.pub" in issues[0].message and issues[0].line == 11
    (tmp_path / "node_key.pub").write_text("ssh-ed25519 AAAA")
    assert preflight(load_config(cfg)) == []
