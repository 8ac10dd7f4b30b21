"""The one reader of TOML config, for every daemon (manager, hub, agent) and their TLS
tables: `load_toml` reads a file, `Table` reads the keys of one table.

Defaults are written once, in the frozen dataclass a table fills: a key that is absent
takes the default of the `defaults` dataclass's field of the same name (a field without a
default makes the key required); a computed default (`unit = NAME.service`) is passed as
`default=` by the loader. Every error names the full key (`services[0].stop_timeout`) and
says what was expected; `done()` rejects the keys nobody read. The naming rules (services,
hosts, addresses, labels, env, versions) are backendai/validate.py's.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import signal
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from backendai.auth import (
    ANONYMOUS,
    DEFAULT_NAME,
    MAX_TOKENS,
    ROLES,
    TOKEN_NAME_RE,
    Role,
    TokenSpec,
)
from backendai.errors import ConfigError, InvalidArgument
from backendai.listen import ListenAddress
from backendai.validate import (
    check_address,
    check_env,
    check_host_name,
    check_labels,
    check_service_name,
    check_version,
    is_version,
)

if TYPE_CHECKING:  # loaded by the TLS tables' readers: a daemon without TLS never needs it
    from backendai.tls import ClientTLS, ServerTLS

MAX_CONFIG_BYTES = 1 << 20
MAX_TEXT = 4096
MAX_ARGV = 1000
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")

T = TypeVar("T")


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET = _Unset.UNSET  # "no default given here": the dataclass field's, else required


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file of at most 1 MiB; errors name the file."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{str(path)!r}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{str(path)!r}: not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{str(path)!r}: invalid TOML: {exc}") from None


class _Bad(Exception):
    """A value is unusable; `Table._read` puts the key in front of the message."""


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _string(value: Any, max_len: int, *, absolute_path: bool = False) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a string, got {_got(value)}")
    if len(value) > max_len or "\x00" in value:
        raise _Bad(f"too long or contains NUL (at most {max_len} characters)")
    if absolute_path and value and not Path(value).is_absolute():
        raise _Bad(f"must be an absolute path, got {_got(value)}")
    return value


class Table:
    """Typed reads of one TOML table.

    `prefix` is the table's own key (`""` at the top, `services[0]`, `hub.tls`; one
    ending in ":" names a file, as `/etc/hosts.toml:`). `defaults` is the dataclass whose
    field defaults stand for absent keys. Several dataclasses filled from one flat table
    read it through `part()`, so one `done()` still sees every key.
    """

    def __init__(self, data: Any, prefix: str = "", *, defaults: type | None = None,
                 seen: set[str] | None = None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix or 'config'}: must be a table, got {_got(data)}")
        self.data: dict[str, Any] = data
        self.prefix = prefix
        self.seen: set[str] = set() if seen is None else seen
        self._fields = {f.name: f for f in dataclasses.fields(defaults)} if defaults else {}

    def part(self, defaults: type) -> Table:
        """This table's keys read for another dataclass (shares what was read)."""
        return Table(self.data, self.prefix, defaults=defaults, seen=self.seen)

    def key(self, name: str) -> str:
        if not self.prefix:
            return name
        return f"{self.prefix} {name}" if self.prefix.endswith(":") else f"{self.prefix}.{name}"

    def done(self) -> None:
        """Reject the first key nobody read."""
        for name in self.data:
            if name not in self.seen:
                raise ConfigError(f"{self.key(name)}: unknown key")

    # ---- the one read path -----------------------------------------------------------

    def _read(self, name: str, default: Any, what: str, convert: Callable[[Any], T]) -> T:
        """The key's value through `convert` when set (a `_Bad` says what is wrong;
        validate.py's InvalidArgument already names the key). Absent: `default`, else
        the dataclass field's default, else the key is required."""
        self.seen.add(name)
        if name in self.data:
            try:
                return convert(self.data[name])
            except InvalidArgument as exc:
                raise ConfigError(str(exc)) from None
            except _Bad as exc:
                raise ConfigError(f"{self.key(name)}: {exc}") from None
        if default is not UNSET:
            return default  # type: ignore[no-any-return]
        spec = self._fields.get(name)
        if spec is not None and spec.default is not dataclasses.MISSING:
            return spec.default  # type: ignore[no-any-return]
        if spec is not None and spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()  # type: ignore[no-any-return]
        raise ConfigError(f"{self.key(name)}: required ({what})")

    # ---- scalars ---------------------------------------------------------------------

    def text(self, name: str, *, max_len: int = MAX_TEXT, min_len: int = 0,
             absolute_path: bool = False, default: str | _Unset = UNSET) -> str:
        """A string without NUL; `absolute_path`: when not empty, an absolute path."""
        def convert(value: Any) -> str:
            text = _string(value, max_len, absolute_path=absolute_path)
            if len(text) < min_len:
                raise _Bad(f"must not be empty, got {_got(text)}")
            return text
        return self._read(name, default, "a string", convert)

    def choice(self, name: str, choices: tuple[str, ...], *,
               default: str | _Unset = UNSET) -> str:
        def convert(value: Any) -> str:
            if _string(value, MAX_TEXT) not in choices:
                raise _Bad(f"must be one of {', '.join(choices)}, got {_got(value)}")
            return str(value)
        return self._read(name, default, f"one of {', '.join(choices)}", convert)

    def flag(self, name: str, *, default: bool | _Unset = UNSET) -> bool:
        def convert(value: Any) -> bool:
            if not isinstance(value, bool):
                raise _Bad(f"must be true or false, got {_got(value)}")
            return value
        return self._read(name, default, "true or false", convert)

    def number(self, name: str, *, low: float, high: float,
               default: float | _Unset = UNSET) -> float:
        """An int or float (never a bool) in [low, high]: finite, as the bounds are."""
        def convert(value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Bad(f"must be a number, got {_got(value)}")
            if (isinstance(value, float) and not math.isfinite(value)) \
                    or not low <= value <= high:
                raise _Bad(f"must be between {low:g} and {high:g}, got {_got(value)}")
            return float(value)
        return self._read(name, default, f"a number, {low:g} to {high:g}", convert)

    def integer(self, name: str, *, low: int, high: int,
                default: int | _Unset = UNSET) -> int:
        """An integer in [low, high]; a bool is never an integer, nor is 3.0."""
        def convert(value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Bad(f"must be an integer, got {_got(value)}")
            if not low <= value <= high:
                raise _Bad(f"must be between {low} and {high}, got {_got(value)}")
            return value
        return self._read(name, default, f"an integer, {low} to {high}", convert)

    def _path(self, absolute: bool) -> Callable[[Any], Path]:
        def convert(value: Any) -> Path:
            if not _string(value, MAX_TEXT, absolute_path=absolute):
                raise _Bad("must be a file path, got ''")
            return Path(value)
        return convert

    def path(self, name: str, *, absolute: bool = False,
             default: Path | _Unset = UNSET) -> Path:
        """A path key whose field holds a Path (required, or a Path default)."""
        what = "an absolute path" if absolute else "a file path"
        return self._read(name, default, what, self._path(absolute))

    def optional_path(self, name: str, *, absolute: bool = False) -> Path | None:
        """A path key that is none when absent."""
        return self._read(name, None, "", self._path(absolute))

    def signal_name(self, name: str) -> signal.Signals:
        def convert(value: Any) -> signal.Signals:
            if isinstance(value, str):
                upper = value.upper()
                upper = upper if upper.startswith("SIG") else f"SIG{upper}"
                if upper in signal.Signals.__members__:
                    return signal.Signals[upper]
            raise _Bad(f"must be a signal name like \"TERM\", got {_got(value)}")
        return self._read(name, UNSET, "a signal name", convert)

    def exit_codes(self, name: str) -> tuple[int, ...]:
        def convert(value: Any) -> tuple[int, ...]:
            if not isinstance(value, list) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
                    for v in value):
                raise _Bad(f"must be a list of exit codes 0-255, got {_got(value)}")
            return tuple(value)
        return self._read(name, UNSET, "a list of exit codes", convert)

    def argv(self, name: str) -> tuple[str, ...]:
        """A command: a non-empty list of non-empty strings, no shell."""
        def convert(value: Any) -> tuple[str, ...]:
            if not isinstance(value, list) or not value or not all(
                    isinstance(v, str) and v and "\x00" not in v for v in value):
                raise _Bad("must be a non-empty list of non-empty strings, got "
                                 f"{_got(value)}")
            if len(value) > MAX_ARGV:
                raise _Bad(f"must hold at most {MAX_ARGV} arguments")
            return tuple(value)
        return self._read(name, UNSET, "a list of strings", convert)

    def custom(self, name: str, what: str, convert: Callable[[Any], T]) -> T:
        """A key with its own conversion: an InvalidArgument it raises must name the key
        (`self.key(name)`). Absent: the dataclass field's default, else required."""
        return self._read(name, UNSET, what, convert)

    # ---- addresses and names (the rules are validate.py's) ---------------------------

    def listen(self, name: str) -> ListenAddress:
        """An address to bind: an IP address or localhost, port 0-65535."""
        def convert(value: Any) -> ListenAddress:
            try:
                return ListenAddress.parse(value)
            except ValueError as exc:
                raise _Bad(f"must be \"HOST:PORT\": {exc}") from None
        return self._read(name, UNSET, "\"HOST:PORT\"", convert)

    def address(self, name: str) -> str:
        """An address to dial: host name, IPv4 or [IPv6], port 1-65535."""
        return self._read(name, UNSET, "\"HOST:PORT\"",
                          lambda value: check_address(value, self.key(name)))

    def addresses(self, name: str, *, most: int = 16) -> tuple[str, ...]:
        """One address to dial, or a list of them (tried in order): `"HOST:PORT"` or
        `["HOST:PORT", ...]`, at least one, no repeats."""
        def convert(value: Any) -> tuple[str, ...]:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not items:
                raise _Bad(f"must be \"HOST:PORT\" or a non-empty list of them, got "
                           f"{_got(value)}")
            if len(items) > most:
                raise _Bad(f"at most {most} addresses")
            out = tuple(check_address(v, self.key(name)) for v in items)
            if len(set(out)) != len(out):
                raise _Bad(f"lists an address twice: {_got(value)}")
            return out
        return self._read(name, UNSET, "\"HOST:PORT\" or a list of them", convert)

    def service_name(self, name: str) -> str:
        return self._read(name, UNSET, "a service name",
                          lambda value: check_service_name(value, self.key(name)))

    def host_name(self, name: str, *, default: str | _Unset = UNSET) -> str:
        return self._read(name, default, "a host name",
                          lambda value: check_host_name(value, self.key(name)))

    def version(self, name: str) -> str:
        return self._read(name, UNSET, "a version",
                          lambda value: check_version(value, self.key(name)))

    def labels(self, name: str) -> dict[str, str]:
        return self._read(name, UNSET, "a table of labels",
                          lambda value: check_labels(value, self.key(name)))

    def env(self, name: str) -> dict[str, str]:
        return self._read(name, UNSET, "a table of NAME = \"value\"",
                          lambda value: check_env(value, self.key(name)))

    # ---- tables ----------------------------------------------------------------------

    def table(self, name: str, *, defaults: type | None = None) -> Table | None:
        """A sub-table (none when absent); its caller calls its `done()`."""
        return self._read(name, None, "a table",
                          lambda value: Table(value, self.key(name), defaults=defaults))

    def tables(self, name: str, *, most: int, required: bool = False,
               defaults: type | None = None) -> list[Table]:
        """An array of tables (`[[name]]`), at most `most`; `required`: at least one."""
        key = self.key(name)
        self.seen.add(name)
        items = self.data.get(name, [])
        if required and (not isinstance(items, list) or not items):
            raise ConfigError(f"{key}: at least one [[{name}]] table is required")
        if not isinstance(items, list):
            raise ConfigError(f"{key}: must be an array of tables ([[{name}]]), got "
                              f"{_got(items)}")
        if len(items) > most:
            raise ConfigError(f"{key}: at most {most} [[{name}]] tables")
        return [Table(item, f"{key}[{i}]", defaults=defaults) for i, item in enumerate(items)]

    def auth_tokens(self, name: str = "auth_tokens", *,
                    default_token: bool = False) -> tuple[TokenSpec, ...]:
        """`[[auth_tokens]]`: named bearer tokens (name, file, role). default_token: the
        daemon also has `auth_token_file`, the admin token named "default"."""
        specs: list[TokenSpec] = []
        for t in self.tables(name, most=MAX_TOKENS, defaults=TokenSpec):
            spec = TokenSpec(name=t._read("name", UNSET, "a token name", _token_name),
                             file=t.path("file", absolute=True),
                             role=Role(t.choice("role", ROLES)))
            t.done()
            taken = [s.name for s in specs] + ([DEFAULT_NAME] if default_token else [])
            if spec.name in taken:
                why = " (auth_token_file's token is named \"default\")" \
                    if spec.name == DEFAULT_NAME and default_token else ""
                raise ConfigError(f"{t.key('name')}: duplicate token name {spec.name!r}{why}")
            specs.append(spec)
        return tuple(specs)

    def tls_server(self, name: str) -> ServerTLS | None:
        """`[tls]` of a server: cert_file, key_file, client_ca_file."""
        sub = self.table(name)
        if sub is None:
            return None
        from backendai.tls import ServerTLS  # noqa: PLC0415 - only with TLS configured

        return ServerTLS.from_table(sub)

    def tls_client(self, name: str) -> ClientTLS | None:
        """`[..._tls]` of a client: ca_file, cert_file + key_file, server_name."""
        sub = self.table(name)
        if sub is None:
            return None
        from backendai.tls import ClientTLS  # noqa: PLC0415 - only with TLS configured

        return ClientTLS.from_table(sub)


def _token_name(value: Any) -> str:
    if not isinstance(value, str) or not value.isascii() \
            or TOKEN_NAME_RE.fullmatch(value) is None:
        raise _Bad(f"must be 1-64 of A-Z a-z 0-9 '.', '_', '@', '-', starting with a letter "
                   f"or digit, got {_got(value)}")
    if value == ANONYMOUS:
        raise _Bad(f"{ANONYMOUS!r} names callers without a token; choose another name")
    return value


def require_token_off_loopback(listens: dict[str, ListenAddress], token: Path | None,
                               insecure: bool) -> None:
    """A daemon listening beyond loopback needs a token (`auth_token_file`, or any
    `[[auth_tokens]]`: pass one of their files), unless `insecure_no_auth = true` says
    that unauthenticated callers are accepted."""
    exposed = any(not address.is_loopback for address in listens.values())
    if exposed and token is None and not insecure:
        raise ConfigError(f"auth_token_file: required when {' or '.join(listens)} is not a "
                          "loopback address (or [[auth_tokens]]; or set insecure_no_auth = "
                          "true to accept unauthenticated commands)")


def require_tls_for_https(http_tls: bool, tls: ServerTLS | None) -> None:
    """`http_tls = true` (the HTTP listener serves HTTPS) needs `[tls]`: its certificate
    is the one served."""
    if http_tls and tls is None:
        raise ConfigError("http_tls: needs [tls] (cert_file and key_file, and client_ca_file "
                          "for mutual TLS): the HTTPS listener serves that certificate")


def release_version(configured: str, anchors: list[Path]) -> str:
    """The running release's version: `configured` (checked by the loader), else the
    first `VERSION` file found in the anchors (a release root holds one), else
    "unknown"."""
    if configured:
        return configured
    for anchor in anchors:
        candidate = anchor / "VERSION"
        try:
            text = candidate.read_text()[:100].strip()
        except OSError:
            continue
        if is_version(text):
            return text
    return "unknown"


def release_anchors() -> list[Path]:
    """Where a daemon looks for its release's VERSION file: the working directory (a
    manager starts it inside current/) and the parent of the directory holding the
    executable (releases start with bin/ai-hub, bin/ai-agent)."""
    return [Path.cwd(), Path(sys.argv[0]).resolve().parent.parent]
