"""Destroy is always possible: a version that left the supported range, a damaged or missing
config, a host gone for good. And it removes exactly the kubeconfig entries kubitect merged.

Runs the real CLI and engine with the TEST DOUBLE backends (tests/fixtures/kubitect_fakes.py).
"""

from __future__ import annotations

import yaml

CLUSTER = "kubitect-ha"
MACHINE_KINDS = ("network", "pool", "volume", "domain")


def _machines(fakes, host: str | None = None) -> list[str]:
    return [k for k, v in fakes.objects().items()
            if k.split("/")[0] in MACHINE_KINDS and (host is None or v["host"] == host)]


def _apply_without_verify(cli, cfg) -> None:
    """Every stage but verify (the conformance run is slow and not what these tests are about)."""
    stages = ["network", "storage", "vms", "loadbalancers", "kubernetes"]
    result = cli("run", str(cfg), *[a for s in stages for a in ("--stage", s)])
    assert result.exit_code == 0, result.output


def test_destroy_works_after_the_clusters_version_left_the_supported_range(cli, fake_env, fakes, monkeypatch):
    _apply_without_verify(cli, fake_env / "ha.yaml")  # v1.28.6, supported today
    monkeypatch.setenv("KUBITECT_FAKE_SUPPORTED", "1.33.0,1.35.99")  # a later kubitect dropped 1.28
    refused = cli("apply", str(fake_env / "ha.yaml"))
    assert refused.exit_code == 1 and "kubernetes.version" in refused.output  # apply still checks it
    result = cli("destroy", "--cluster", CLUSTER, "-y")
    assert result.exit_code == 0, result.output
    assert _machines(fakes) == [] and fakes.objects() == {}
    assert not (fake_env / "home" / "clusters" / CLUSTER).exists()


def test_destroy_works_from_the_record_when_both_stored_configs_are_damaged(cli, fake_env, fakes):
    _apply_without_verify(cli, fake_env / "ha.yaml")
    d = fake_env / "home" / "clusters" / CLUSTER
    (d / "config.yaml").write_text("hosts: [\n")  # not YAML
    (d / "applied.yaml").unlink(missing_ok=True)
    result = cli("destroy", "--cluster", CLUSTER, "-y")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "config.yaml" in flat and "destroying from the record" in flat
    assert _machines(fakes) == []
    assert not d.exists()


def test_destroy_with_neither_config_nor_record_refuses_without_force(cli, fake_env, fakes):
    _apply_without_verify(cli, fake_env / "ha.yaml")
    d = fake_env / "home" / "clusters" / CLUSTER
    (d / "config.yaml").unlink()
    (d / "record.json").write_text("{")
    refused = cli("destroy", "--cluster", CLUSTER, "-y")
    assert refused.exit_code == 1
    assert "cannot tell which hosts hold cluster" in " ".join(refused.output.split())
    assert d.exists() and _machines(fakes)

    forced = cli("destroy", "--cluster", CLUSTER, "-y", "--force")
    assert forced.exit_code == 0, forced.output
    assert not d.exists()


def test_destroy_stops_when_a_host_is_unreachable_and_force_finishes_listing_what_is_left(
        cli, fake_env, fakes, monkeypatch):
    _apply_without_verify(cli, fake_env / "ha.yaml")
    d = fake_env / "home" / "clusters" / CLUSTER
    monkeypatch.setenv("KUBITECT_FAKE_HOST_GONE", "host3")
    stopped = cli("destroy", "--cluster", CLUSTER, "-y")
    assert stopped.exit_code == 1
    flat = " ".join(stopped.output.split())
    assert "host host3: no route to host" in flat and "--force" in flat
    assert d.exists(), "the record of what is left must survive a failed destroy"
    domains = [m for m in _machines(fakes) if m.startswith("domain/")]
    assert domains and set(domains) == {m for m in _machines(fakes, "host3") if m.startswith("domain/")}

    forced = cli("destroy", "--cluster", CLUSTER, "-y", "--force")
    assert forced.exit_code == 0, forced.output
    assert "Not removed" in forced.output
    left = forced.output.split("Not removed", 1)[1]
    assert [line.strip() for line in left.splitlines() if line.strip().startswith("- ")] == [
        f"- {stage}: host host3: no route to host" for stage in ("vms", "storage", "network")]
    assert not d.exists()
    assert set(_machines(fakes)) == set(_machines(fakes, "host3"))  # only the gone host's objects remain


def test_destroy_removes_exactly_the_kubeconfig_entries_kubitect_merged(cli, fake_env, fakes, monkeypatch):
    user = fake_env / ".kube" / "config"
    user.parent.mkdir()
    theirs = {"apiVersion": "v1", "kind": "Config", "current-context": "prod",
              "clusters": [{"name": "prod", "cluster": {"server": "https://prod:6443"}}],
              "users": [{"name": "prod", "user": {"token": "t"}}],
              "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}]}
    user.write_text(yaml.safe_dump(theirs))
    monkeypatch.setenv("KUBITECT_FAKE_KUBECONFIG", str(user))
    _apply_without_verify(cli, fake_env / "ha.yaml")
    assert CLUSTER in [c["name"] for c in yaml.safe_load(user.read_text())["contexts"]]
    # the stored config is unusable, so the installer's own destroy cannot run: the engine
    # still removes the entries from what was recorded at merge time
    (fake_env / "home" / "clusters" / CLUSTER / "config.yaml").write_bytes(b"\xff")
    result = cli("destroy", "--cluster", CLUSTER, "-y")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(user.read_text()) == theirs


def test_a_kubeconfig_entry_of_another_tool_is_never_replaced_nor_removed(cli, fake_env, fakes, monkeypatch):
    user = fake_env / ".kube" / "config"
    user.parent.mkdir()
    theirs = {"apiVersion": "v1", "kind": "Config", "current-context": CLUSTER,
              "clusters": [{"name": CLUSTER, "cluster": {"server": "https://someone-else:6443"}}],
              "users": [{"name": "me", "user": {"token": "t"}}],
              "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": "me"}}]}
    user.write_text(yaml.safe_dump(theirs))
    monkeypatch.setenv("KUBITECT_FAKE_KUBECONFIG", str(user))
    stages = ["network", "storage", "vms", "loadbalancers", "kubernetes"]
    refused = cli("run", str(fake_env / "ha.yaml"), *[a for s in stages for a in ("--stage", s)])
    assert refused.exit_code == 0, refused.output  # the cluster is fine; only the merge is refused
    flat = " ".join(refused.output.split())
    assert "warning: kubeconfig not merged" in flat
    assert f"already has a cluster named '{CLUSTER}' that kubitect did not write" in flat
    assert yaml.safe_load(user.read_text()) == theirs

    ok = cli("run", str(fake_env / "ha.yaml"), "--kubeconfig-name", "ha-kubitect",
             *[a for s in stages for a in ("--stage", s)])
    assert ok.exit_code == 0, ok.output
    merged = yaml.safe_load(user.read_text())
    assert merged["current-context"] == "ha-kubitect"
    assert [c["name"] for c in merged["clusters"]] == [CLUSTER, "ha-kubitect"]
    assert cli("destroy", "--cluster", CLUSTER, "-y").exit_code == 0
    assert yaml.safe_load(user.read_text()) == theirs
