"""Node images built offline from the machine's own apt sources (rootfs for nspawn, qcow2 for libvirt)."""
