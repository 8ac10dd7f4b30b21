from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServiceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVICE_STATE_UNSPECIFIED: _ClassVar[ServiceState]
    SERVICE_STATE_STOPPED: _ClassVar[ServiceState]
    SERVICE_STATE_STARTING: _ClassVar[ServiceState]
    SERVICE_STATE_RUNNING: _ClassVar[ServiceState]
    SERVICE_STATE_BACKOFF: _ClassVar[ServiceState]
    SERVICE_STATE_STOPPING: _ClassVar[ServiceState]
    SERVICE_STATE_EXITED: _ClassVar[ServiceState]
    SERVICE_STATE_FATAL: _ClassVar[ServiceState]
SERVICE_STATE_UNSPECIFIED: ServiceState
SERVICE_STATE_STOPPED: ServiceState
SERVICE_STATE_STARTING: ServiceState
SERVICE_STATE_RUNNING: ServiceState
SERVICE_STATE_BACKOFF: ServiceState
SERVICE_STATE_STOPPING: ServiceState
SERVICE_STATE_EXITED: ServiceState
SERVICE_STATE_FATAL: ServiceState

class ServiceStatus(_message.Message):
    __slots__ = ("name", "state", "pid", "uptime_seconds", "restarts", "exit_code", "exit_signal", "version", "package", "backend", "message", "state_since_unix", "adopted", "update")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    EXIT_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    ADOPTED_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ServiceState
    pid: int
    uptime_seconds: float
    restarts: int
    exit_code: int
    exit_signal: int
    version: str
    package: str
    backend: str
    message: str
    state_since_unix: float
    adopted: bool
    update: UpdateSummary
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ServiceState, str]] = ..., pid: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., restarts: _Optional[int] = ..., exit_code: _Optional[int] = ..., exit_signal: _Optional[int] = ..., version: _Optional[str] = ..., package: _Optional[str] = ..., backend: _Optional[str] = ..., message: _Optional[str] = ..., state_since_unix: _Optional[float] = ..., adopted: _Optional[bool] = ..., update: _Optional[_Union[UpdateSummary, _Mapping]] = ...) -> None: ...

class UpdateSummary(_message.Message):
    __slots__ = ("running_operation_id", "last_operation_id", "last_outcome", "last_message", "last_version")
    RUNNING_OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_VERSION_FIELD_NUMBER: _ClassVar[int]
    running_operation_id: str
    last_operation_id: str
    last_outcome: str
    last_message: str
    last_version: str
    def __init__(self, running_operation_id: _Optional[str] = ..., last_operation_id: _Optional[str] = ..., last_outcome: _Optional[str] = ..., last_message: _Optional[str] = ..., last_version: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class ListServicesRequest(_message.Message):
    __slots__ = ("pattern",)
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    def __init__(self, pattern: _Optional[str] = ...) -> None: ...

class ListServicesResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceStatus]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceStatus, _Mapping]]] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ("service", "no_wait")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    NO_WAIT_FIELD_NUMBER: _ClassVar[int]
    service: str
    no_wait: bool
    def __init__(self, service: _Optional[str] = ..., no_wait: _Optional[bool] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("service", "timeout_seconds", "force")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    service: str
    timeout_seconds: float
    force: bool
    def __init__(self, service: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., force: _Optional[bool] = ...) -> None: ...

class RestartRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("version", "name", "manager_version", "service")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MANAGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    version: str
    name: str
    manager_version: str
    service: str
    def __init__(self, version: _Optional[str] = ..., name: _Optional[str] = ..., manager_version: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("service", "lines")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    service: str
    lines: int
    def __init__(self, service: _Optional[str] = ..., lines: _Optional[int] = ...) -> None: ...

class LogsResponse(_message.Message):
    __slots__ = ("service", "lines")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    service: str
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, service: _Optional[str] = ..., lines: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamLogsRequest(_message.Message):
    __slots__ = ("service", "tail_lines", "no_follow")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    NO_FOLLOW_FIELD_NUMBER: _ClassVar[int]
    service: str
    tail_lines: int
    no_follow: bool
    def __init__(self, service: _Optional[str] = ..., tail_lines: _Optional[int] = ..., no_follow: _Optional[bool] = ...) -> None: ...

class LogBatch(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("service", "version")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    service: str
    version: str
    def __init__(self, service: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("operation_id", "message")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    message: str
    def __init__(self, operation_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class WatchUpdateRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class UpdateEvent(_message.Message):
    __slots__ = ("operation_id", "step", "status", "message", "elapsed_seconds", "at_unix", "final", "outcome", "from_version", "to_version", "service")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    step: str
    status: str
    message: str
    elapsed_seconds: float
    at_unix: float
    final: bool
    outcome: str
    from_version: str
    to_version: str
    service: str
    def __init__(self, operation_id: _Optional[str] = ..., step: _Optional[str] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., elapsed_seconds: _Optional[float] = ..., at_unix: _Optional[float] = ..., final: _Optional[bool] = ..., outcome: _Optional[str] = ..., from_version: _Optional[str] = ..., to_version: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("operation_id", "version")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    version: str
    def __init__(self, operation_id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ListReleasesRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("version", "current", "previous", "installed_unix")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_UNIX_FIELD_NUMBER: _ClassVar[int]
    version: str
    current: bool
    previous: bool
    installed_unix: float
    def __init__(self, version: _Optional[str] = ..., current: _Optional[bool] = ..., previous: _Optional[bool] = ..., installed_unix: _Optional[float] = ...) -> None: ...

class ListReleasesResponse(_message.Message):
    __slots__ = ("releases",)
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[Release]
    def __init__(self, releases: _Optional[_Iterable[_Union[Release, _Mapping]]] = ...) -> None: ...

class VersionReport(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...
