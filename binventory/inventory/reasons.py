"""The reason codes an audit's ledger lines carry. Apart from ``models`` so that the command
line's help can list them without importing SQLAlchemy."""

# Why a recount differed from the record (cycle-count tools use similar lists).
REASON_CODES = ("miscount", "damaged", "misplaced", "not_received", "found", "theft_or_loss",
                "other")
# Closing a task whose count agrees with the record needs no cause.
AGREED_REASON = "count_confirmed"
