"""Every Postgres advisory lock key Quarterdeck takes, in one place.

Advisory locks share one key space per database, session-level and transaction-level alike: a
key held by one role's leader also blocks any other code that tries the same number. Keys used
to be chosen beside their users, and two collided. The run store's orphan repair used the health
monitor's election key, and its lapsed-run repair used the scaler's, so while those roles had a
leader the repairs always found the lock taken and did nothing: a run whose worker died was
never requeued by them. Keys are therefore declared only here, and a unit test holds them
distinct.
"""

from __future__ import annotations

MIGRATIONS = 0x51D_0001
"""Held (session-level) while one process applies migrations."""
HEALTH_MONITOR = 0x51D_0002
"""The health monitor's leader election."""
SCALER = 0x51D_0003
"""The worker autoscaler's leader election."""
ROLLOUTS = 0x51D_0004
"""The rollout controller's leader election."""
REPORTS = 0x51D_0005
"""The monthly report scheduler's leader election."""
RUN_ORPHANS = 0x51D_0102
"""One repairer at a time of runs whose queue job vanished (transaction-level)."""
RUN_LAPSED = 0x51D_0103
"""One repairer at a time of running runs whose worker went silent (transaction-level)."""
AUDIT_CHECKPOINT = 0x51D_A0D1
"""The audit checkpoint writer."""
AUDIT_PURGE = 0x51D_A0D2
"""The audit log's retention purge (transaction-level)."""
TENANT_MAINTENANCE = 0x51D_A0E1
"""Tenant-data maintenance: the run-data retention purge and erasure sweeps."""

ALL: dict[str, int] = {
    name: value for name, value in dict(globals()).items() if name.isupper() and name != "ALL"
}
"""Every key by name (what the uniqueness test reads)."""
