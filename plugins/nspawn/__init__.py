"""Built-in plugin 'nspawn' (being written)."""
