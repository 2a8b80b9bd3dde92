"""Inventory reconciliation: the database of bins, SKUs and expected quantities, the
confirm/flag/review decisions on observations, the audit queue and the append-only ledger.

Modules: ``models`` (SQLAlchemy tables), ``db`` (engines, sessions, Alembic migrations),
``importer`` (ABID metadata -> bins/SKUs), ``verify`` and ``policy`` (P(record is right) and the
decision rule), ``calibrate`` (thresholds for a target false-confirm rate), ``reconcile``
(predict -> decide -> write), ``audit`` (tasks and ledger), ``tokens``, ``api`` (HTTP routes),
``cli``.
"""
