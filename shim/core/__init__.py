"""Units, jobs and the manager's rules, with no D-Bus imports."""
