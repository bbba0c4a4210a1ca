"""Pure, standard-library-only tables and functions that mirror systemd's documented behaviour."""
