#!/bin/sh
# pam_exec(8) hook of scenario_readme.py's PAM service, after `session include
# common-session`: in open_session and close_session it appends one JSON line to DIR/hook.jsonl
# (the PAM application's cgroup and the XDG_* variables pam_systemd set), then holds the
# application until DIR/go-<PAM_TYPE> exists (60 s at most), so the scenario can look at the
# session while it is open.
# Usage (in the PAM service file): session required pam_exec.so /bin/sh <this file> DIR
dir=$1
cgroup=$(sed -n 's/^0:://p' /proc/$PPID/cgroup)
printf '{"type":"%s","user":"%s","pid":%s,"cgroup":"%s","XDG_SESSION_ID":"%s","XDG_RUNTIME_DIR":"%s"}\n' \
  "$PAM_TYPE" "$PAM_USER" "$PPID" "$cgroup" "${XDG_SESSION_ID:-}" "${XDG_RUNTIME_DIR:-}" \
  >>"$dir/hook.jsonl"
i=0
while [ ! -e "$dir/go-$PAM_TYPE" ] && [ $i -lt 1200 ]; do
  sleep 0.05
  i=$((i + 1))
done
exit 0
