"""Built-in plugin 'libvirt' (being written)."""
