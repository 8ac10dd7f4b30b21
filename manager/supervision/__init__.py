"""Supervision: service states, the pure supervisor, the unit protocol and the units that
carry it out (built-in processes, systemd, rc.d), their OS helpers and log stores.

Depends only on `manager.config` and `manager.statestore` (and `backendai`)."""
