"""Versioned schema migrations of the hub's store, one list per backend
(`sqlite.py`, `postgresql.py`).

Each component owns its tables and their version in `schema_versions` (component,
version), as the manager's state file does: the hub's core is component "hub"; later
parts of the hub (an event history, say) add a component of their own without touching
this one. A migration is applied with its version row in one transaction.

`pending()` is the whole decision (pure): a database newer than this hub knows is
refused (run the newer release); an older one is migrated when allowed, else refused
naming the command that migrates it.
"""

from __future__ import annotations

from dataclasses import dataclass

from backendai.errors import FailedPrecondition

MIGRATE_COMMAND = "ai-hub --config FILE --migrate"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str  # statements without parameters, run as one script


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    migrations: tuple[Migration, ...]

    def __post_init__(self) -> None:
        versions = [m.version for m in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{self.name}: migrations must be numbered 1, 2, ... in order")

    @property
    def latest(self) -> int:
        return self.migrations[-1].version if self.migrations else 0


class SchemaMismatch(FailedPrecondition):
    """The database's schema is not the one this hub runs with."""


def pending(component: Component, current: int, *, migrate: bool,
            where: str) -> tuple[Migration, ...]:
    """The migrations to apply to a database whose `component` is at `current` (0: none
    yet). `where` names the database in errors (never with a password)."""
    latest = component.latest
    if current > latest:
        raise SchemaMismatch(
            f"store: the database {where} holds schema {component.name!r} version {current}, "
            f"newer than this hub knows (version {latest}); run the hub release that "
            f"migrated it (every hub on one database runs the same release)")
    todo = tuple(m for m in component.migrations if m.version > current)
    if todo and not migrate:
        names = ", ".join(f"{m.version} ({m.name})" for m in todo)
        raise SchemaMismatch(
            f"store: the database {where} holds schema {component.name!r} version {current}; "
            f"this hub needs version {latest}: run `{MIGRATE_COMMAND}` (applies {names}), or "
            "set [store] migrate = true")
    return todo
