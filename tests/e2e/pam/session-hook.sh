#!/bin/sh
# pam_exec(8) hook of the e2e PAM service, listed after pam_systemd.so: it runs once in
# open_session and once in close_session, as a child of the PAM application (pamtester), so it
# sees the session pam_systemd has just opened or closed. It appends one JSON line to
# DIR/hook.jsonl, then holds the PAM application until DIR/go-<PAM_TYPE> appears (60 s at most),
# which lets the harness look at the session between open_session and close_session and
# again between close_session and the application's exit.
# Usage (in the PAM service file): session required pam_exec.so /bin/sh <this file> DIR
dir=$1
cgroup=$(sed -n 's/^0:://p' /proc/$PPID/cgroup)
printf '{"type":"%s","user":"%s","pamtester":%s,"cgroup":"%s","XDG_SESSION_ID":"%s","XDG_RUNTIME_DIR":"%s","XDG_SESSION_CLASS":"%s","XDG_SESSION_TYPE":"%s"}\n' \
  "$PAM_TYPE" "$PAM_USER" "$PPID" "$cgroup" "${XDG_SESSION_ID:-}" "${XDG_RUNTIME_DIR:-}" \
  "${XDG_SESSION_CLASS:-}" "${XDG_SESSION_TYPE:-}" >>"$dir/hook.jsonl"
i=0
while [ ! -e "$dir/go-$PAM_TYPE" ] && [ $i -lt 1200 ]; do
  sleep 0.05
  i=$((i + 1))
done
exit 0
