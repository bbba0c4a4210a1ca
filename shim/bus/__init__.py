"""The D-Bus front end: the only package that imports dbus-fast; Variants stay in here."""
