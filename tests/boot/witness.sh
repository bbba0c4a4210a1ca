#!/bin/sh
### BEGIN INIT INFO
# Provides:          scopeshim-boot-witness
# Required-Start:
# Required-Stop:     sendsigs
# X-Stop-After:      scopeshim systemd-logind
# Default-Start:     2 3 4 5
# Default-Stop:      0 6
# Short-Description: boot test: what is left once the init stopped scopeshim and logind
### END INIT INFO
# Put in place by tests/boot/boot.sh (never by make install). At shutdown, after the init
# stopped scopeshim and systemd-logind and before it kills what is left (sendsigs; runit's
# stage 3 runs rc0.d/rc6.d after its services are down), records processes, non-empty
# cgroups and /run/user mounts in /run/scopeshim-boot/witness.json (inside.py witness).
case "$1" in
  stop) exec /usr/bin/python3 /usr/src/scopeshim/tests/boot/inside.py witness ;;
  *) exit 0 ;;
esac
