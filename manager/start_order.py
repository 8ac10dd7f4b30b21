"""Start order (`after = ["db", "cache"]`) as a pure graph: which services a service
waits for, the config check (a name that does not exist, a cycle), and the order in
which a set of services is started (dependencies first) or stopped (dependents first).

`after` may name a service or a service with `instances` (then: all its instances).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from backendai.errors import ConfigError

Graph = Mapping[str, Sequence[str]]  # service -> the services it starts after


def resolve(after: Iterable[str], names: Sequence[str],
            groups: Mapping[str, Sequence[str]]) -> tuple[list[str], str]:
    """`after` with group names replaced by their instances; and the first name that
    matches nothing ("" when all do)."""
    out: list[str] = []
    known = set(names)
    for name in after:
        members = groups.get(name) or ([name] if name in known else [])
        if not members:
            return out, name
        out += [m for m in members if m not in out]
    return out, ""


def find_cycle(graph: Graph) -> list[str]:
    """A cycle as a path [a, b, ..., a], or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if state.get(root):
            continue
        path: list[str] = [root]
        stack = [iter(graph.get(root, ()))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph.get(nxt, ())))
    return []


def check(graph: Graph, key_of: Mapping[str, str]) -> None:
    """ConfigError naming the `after` key of a service on a cycle."""
    cycle = find_cycle(graph)
    if cycle:
        raise ConfigError(f"{key_of[cycle[0]]}: a start-order cycle: {' -> '.join(cycle)}")


def waves(names: Iterable[str], graph: Graph) -> list[list[str]]:
    """`names` in start order, as waves: each wave only waits for earlier ones (an
    `after` outside `names` is ignored here). Order within a wave: as given."""
    todo = list(dict.fromkeys(names))
    chosen = set(todo)
    done: set[str] = set()
    out: list[list[str]] = []
    while todo:
        wave = [n for n in todo if all(d in done or d not in chosen for d in graph.get(n, ()))]
        if not wave:  # a cycle (the config check forbids it): keep the rest together
            wave = todo
        out.append(wave)
        done.update(wave)
        todo = [n for n in todo if n not in done]
    return out


def stop_waves(names: Iterable[str], graph: Graph) -> list[list[str]]:
    """`names` in stop order: dependents before what they start after."""
    return list(reversed(waves(names, graph)))


def dependents(name: str, graph: Graph) -> list[str]:
    """The services that start after `name`, directly."""
    return [n for n, after in graph.items() if name in after]
