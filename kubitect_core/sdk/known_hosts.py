"""SDK: OpenSSH's own files as ssh(1) reads them (ssh_config, the user's known_hosts).

For a provider that reaches its hosts as the user's ssh would (libvirt's qemu+ssh URIs): the
config files to honour, the known_hosts files that already vouch for a host, the `~/.ssh` dir.
"""

from kubitect_core.known_hosts import (
    client_config_files,
    fingerprint,
    host_pattern,
    openssh_config_args,
    user_known_hosts_files,
    user_ssh_dir,
)

__all__ = ["client_config_files", "fingerprint", "host_pattern", "openssh_config_args",
           "user_known_hosts_files", "user_ssh_dir"]
