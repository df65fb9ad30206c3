"""Built-in plugin 'keepalived_haproxy' (being written)."""
