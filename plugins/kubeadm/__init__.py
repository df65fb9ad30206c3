"""Built-in plugin 'kubeadm' (being written)."""
