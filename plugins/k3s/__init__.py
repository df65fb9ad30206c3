"""Built-in plugin 'k3s' (being written)."""
