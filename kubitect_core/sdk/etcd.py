"""SDK: etcd on a control-plane node (etcdctl over the remote layer, kubeadm's client certs).

    from kubitect_core.sdk import etcd

    q = await etcd.endpoint_health(r)            # Quorum: members, healthy, needed
    await etcd.member_remove(r, "cp-2")         # by name, ID or Member
    await etcd.snapshot_save(r, "/root/s.db")   # saved, `snapshot status`-checked, 0600

Implemented in `kubitect_core.kube.etcd`; this module is the stable surface plugins import.
"""

from kubitect_core.kube.etcd import (
    CLIENT_PORT,
    DATA_DIR,
    K3S,
    KUBEADM,
    PEER_PORT,
    Added,
    EtcdTls,
    Member,
    Quorum,
    addition_verdict,
    client_url,
    endpoint_health,
    etcdctl,
    member_add,
    member_list,
    member_remove,
    peer_url,
    removal_verdict,
    require_quorum,
    restore_command,
    snapshot_restore,
    snapshot_save,
    snapshot_status,
)

__all__ = [
    "CLIENT_PORT", "DATA_DIR", "K3S", "KUBEADM", "PEER_PORT", "Added", "EtcdTls", "Member", "Quorum",
    "addition_verdict", "client_url", "endpoint_health", "etcdctl", "member_add", "member_list", "member_remove",
    "peer_url", "removal_verdict", "require_quorum", "restore_command", "snapshot_restore", "snapshot_save",
    "snapshot_status",
]
