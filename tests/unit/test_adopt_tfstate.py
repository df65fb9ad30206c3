"""Reading Kubitect's Terraform state for `kubitect adopt` (kubitect_plugins.libvirt.adopted): the
resources of each host module, a domain paired with its own cloud-init disk by module path, data
disks in data pools, load balancers, bridge mode (no network), and what is not a host's (data
sources, the root `local_file`). The module paths and attributes are those Kubitect's embedded
Terraform (provider dmacvicar/libvirt 0.8.3) writes: `module.host_<host>.module.<role>_module["<id>"]`."""

from __future__ import annotations

from kubitect_plugins.libvirt.adopted import _tf_address, _tf_mac, _with_network_tag, tf_hosts

P = 'provider["registry.terraform.io/dmacvicar/libvirt"].{}'


def _r(module, kind, name, *instances, mode="managed", host="h1"):
    return {"module": module, "mode": mode, "type": kind, "name": name, "provider": P.format(host),
            "instances": [{"attributes": a, **({"index_key": k} if k else {})} for k, a in instances]}


def test_resources_per_host_module_with_seeds_paired_by_module():
    h1, h2 = "module.host_h1", "module.host_host-2"
    state = {"version": 4, "resources": [
        _r(h1, "libvirt_pool", "main_resource_pool", (None, {"id": "u1", "name": "c-main-resource-pool"})),
        _r(h1, "libvirt_pool", "data_resource_pools", ("data", {"id": "u2", "name": "c-data-data-resource-pool"})),
        _r(h1, "libvirt_volume", "base_volume", (None, {"id": "/p/base_volume", "name": "base_volume"})),
        _r(f'{h1}.module.lb_module["1"]', "libvirt_domain", "vm_domain",
           (None, {"id": "d1", "name": "c-lb-1", "network_interface": [{"mac": "52:54:00:AA:00:01",
                                                                        "addresses": ["10.0.0.5"]}]})),
        _r(f'{h1}.module.lb_module["1"]', "libvirt_cloudinit_disk", "cloud_init",
           (None, {"id": "/p/c-lb-1-cloud-init.iso;x", "name": "c-lb-1-cloud-init.iso"})),
        _r(f'{h1}.module.worker_module["1"]', "libvirt_volume", "vm_data_disks",
           ("rook", {"id": "/d/c-worker-1-rook-data-disk", "name": "c-worker-1-rook-data-disk",
                     "pool": "c-data-data-resource-pool"})),
        _r(f'{h1}.module.worker_module["1"]', "libvirt_domain", "vm_domain",
           (None, {"id": "d2", "name": "c-worker-1", "network_interface": [{"mac": "52:54:00:aa:00:02",
                                                                            "addresses": []}]})),
        _r(f'{h1}.module.worker_module["1"]', "libvirt_cloudinit_disk", "cloud_init",
           (None, {"id": "/p/c-worker-1-cloud-init.iso;y", "name": "c-worker-1-cloud-init.iso"})),
        # bridge mode on host-2: no network module; a master there
        _r(f'{h2}.module.master_module["1"]', "libvirt_domain", "vm_domain",
           (None, {"id": "d3", "name": "c-master-1"}), host="host-2"),
        _r(f'{h2}.module.master_module["1"]', "libvirt_cloudinit_disk", "cloud_init",
           (None, {"name": "c-master-1-cloud-init.iso"}), host="host-2"),
        _r(f'{h1}.module.master_module["1"]', "local_file", "ssh_public_key", (None, {"name": "x"}), mode="data"),
        {"mode": "managed", "type": "local_file", "name": "output", "instances": [{"attributes": {}}]},
    ]}
    hosts = tf_hosts(state)
    assert sorted(hosts) == ["h1", "host-2"]
    h = hosts["h1"]
    assert sorted(h.pools) == ["c-data-data-resource-pool", "c-main-resource-pool"]
    assert h.base_volume == "base_volume" and "c-worker-1-rook-data-disk" in h.volumes
    assert sorted(h.domains) == ["c-lb-1", "c-worker-1"] and h.networks == {}
    assert h.seeds == {"c-lb-1": "c-lb-1-cloud-init.iso", "c-worker-1": "c-worker-1-cloud-init.iso"}
    assert hosts["host-2"].seeds == {"c-master-1": "c-master-1-cloud-init.iso"}
    assert hosts["host-2"].base_volume is None
    assert _tf_mac(h.domains["c-lb-1"]) == "52:54:00:aa:00:01" and _tf_address(h.domains["c-lb-1"]) == "10.0.0.5"
    assert _tf_address(h.domains["c-worker-1"]) is None


def test_the_tag_goes_into_the_networks_persistent_definition():
    tag = '<kubitect:cluster xmlns:kubitect="https://kubitect.dev/xmlns/1" name="c"/>'
    plain = "<network>\n  <name>c-network</name>\n  <uuid>u</uuid>\n  <forward mode='nat'/>\n</network>"
    assert _with_network_tag(plain, tag) == ("<network>\n  <name>c-network</name>\n  <uuid>u</uuid>\n  <metadata>\n"
                                             f"    {tag}\n  </metadata>\n  <forward mode='nat'/>\n</network>")
    other = "<network><name>n</name><metadata><x:y xmlns:x='urn:x'/></metadata></network>"
    assert _with_network_tag(other, tag) == (f"<network><name>n</name><metadata>\n    {tag}<x:y xmlns:x='urn:x'/>"
                                             "</metadata></network>")
