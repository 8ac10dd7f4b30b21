"""Updates: the pure update plan and its journal, fetch/verify/extract, the on-host
release layout, the health gate, and the updater that carries a plan out.

Depends on `manager.supervision` (the units it stops, switches and starts) and below."""
