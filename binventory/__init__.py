"""binventory: count items in warehouse bin photos and reconcile them with the inventory."""

__version__ = "0.1.0"


class BinventoryError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""
