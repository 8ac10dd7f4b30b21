"""The event history and audit trail every daemon keeps (manager and hub): the event
model and its query rules (model.py), the SQLite table (sqlite_store.py), the log that
queues, commits, prunes and serves events (log.py), who asked for an operator action
(audit.py), the wire forms (wire.py) and the sinks that ship events elsewhere
(sinks/)."""
