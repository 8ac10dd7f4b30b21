from backendai.v1 import events_pb2 as _events_pb2
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
    __slots__ = ("name", "state", "pid", "uptime_seconds", "restarts", "exit_code", "exit_signal", "version", "package", "backend", "message", "state_since_unix", "adopted", "update", "desired", "health", "health_message", "health_since_unix", "health_failures", "instance_of", "instance", "after")
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
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_OF_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
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
    desired: str
    health: str
    health_message: str
    health_since_unix: float
    health_failures: int
    instance_of: str
    instance: int
    after: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ServiceState, str]] = ..., pid: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., restarts: _Optional[int] = ..., exit_code: _Optional[int] = ..., exit_signal: _Optional[int] = ..., version: _Optional[str] = ..., package: _Optional[str] = ..., backend: _Optional[str] = ..., message: _Optional[str] = ..., state_since_unix: _Optional[float] = ..., adopted: _Optional[bool] = ..., update: _Optional[_Union[UpdateSummary, _Mapping]] = ..., desired: _Optional[str] = ..., health: _Optional[str] = ..., health_message: _Optional[str] = ..., health_since_unix: _Optional[float] = ..., health_failures: _Optional[int] = ..., instance_of: _Optional[str] = ..., instance: _Optional[int] = ..., after: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateSummary(_message.Message):
    __slots__ = ("running_operation_id", "last_operation_id", "last_outcome", "last_message", "last_version", "running_origin", "last_origin", "running_version", "running_step")
    RUNNING_OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    LAST_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    RUNNING_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNNING_STEP_FIELD_NUMBER: _ClassVar[int]
    running_operation_id: str
    last_operation_id: str
    last_outcome: str
    last_message: str
    last_version: str
    running_origin: str
    last_origin: str
    running_version: str
    running_step: str
    def __init__(self, running_operation_id: _Optional[str] = ..., last_operation_id: _Optional[str] = ..., last_outcome: _Optional[str] = ..., last_message: _Optional[str] = ..., last_version: _Optional[str] = ..., running_origin: _Optional[str] = ..., last_origin: _Optional[str] = ..., running_version: _Optional[str] = ..., running_step: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("services", "counts", "total")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceStatus]
    counts: _containers.ScalarMap[str, int]
    total: int
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceStatus, _Mapping]]] = ..., counts: _Optional[_Mapping[str, int]] = ..., total: _Optional[int] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ("service", "no_wait", "force")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    NO_WAIT_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    service: str
    no_wait: bool
    force: bool
    def __init__(self, service: _Optional[str] = ..., no_wait: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("service", "force")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    service: str
    force: bool
    def __init__(self, service: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("service", "keepalive_seconds")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    service: str
    keepalive_seconds: float
    def __init__(self, service: _Optional[str] = ..., keepalive_seconds: _Optional[float] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("service", "version", "origin", "start_stopped")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    START_STOPPED_FIELD_NUMBER: _ClassVar[int]
    service: str
    version: str
    origin: str
    start_stopped: bool
    def __init__(self, service: _Optional[str] = ..., version: _Optional[str] = ..., origin: _Optional[str] = ..., start_stopped: _Optional[bool] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("operation_id", "message", "started", "from_version")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    message: str
    started: bool
    from_version: str
    def __init__(self, operation_id: _Optional[str] = ..., message: _Optional[str] = ..., started: _Optional[bool] = ..., from_version: _Optional[str] = ...) -> None: ...

class GetUpdateRequest(_message.Message):
    __slots__ = ("service", "operation_id", "origin")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    service: str
    operation_id: str
    origin: str
    def __init__(self, service: _Optional[str] = ..., operation_id: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...

class UpdateStep(_message.Message):
    __slots__ = ("step", "status", "message", "started_unix", "elapsed_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: str
    status: str
    message: str
    started_unix: float
    elapsed_seconds: float
    def __init__(self, step: _Optional[str] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., started_unix: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class UpdateOperation(_message.Message):
    __slots__ = ("operation_id", "service", "kind", "from_version", "to_version", "state", "outcome", "message", "origin", "created_unix", "finished_unix", "steps")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    service: str
    kind: str
    from_version: str
    to_version: str
    state: str
    outcome: str
    message: str
    origin: str
    created_unix: float
    finished_unix: float
    steps: _containers.RepeatedCompositeFieldContainer[UpdateStep]
    def __init__(self, operation_id: _Optional[str] = ..., service: _Optional[str] = ..., kind: _Optional[str] = ..., from_version: _Optional[str] = ..., to_version: _Optional[str] = ..., state: _Optional[str] = ..., outcome: _Optional[str] = ..., message: _Optional[str] = ..., origin: _Optional[str] = ..., created_unix: _Optional[float] = ..., finished_unix: _Optional[float] = ..., steps: _Optional[_Iterable[_Union[UpdateStep, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("service", "origin", "version")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    service: str
    origin: str
    version: str
    def __init__(self, service: _Optional[str] = ..., origin: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

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

class CheckReleaseRequest(_message.Message):
    __slots__ = ("service", "version")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    service: str
    version: str
    def __init__(self, service: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class CheckReleaseResponse(_message.Message):
    __slots__ = ("service", "version", "available", "url", "message", "package")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    service: str
    version: str
    available: bool
    url: str
    message: str
    package: str
    def __init__(self, service: _Optional[str] = ..., version: _Optional[str] = ..., available: _Optional[bool] = ..., url: _Optional[str] = ..., message: _Optional[str] = ..., package: _Optional[str] = ...) -> None: ...

class VersionReport(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("added", "removed", "changed", "unchanged", "message")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    changed: _containers.RepeatedScalarFieldContainer[str]
    unchanged: _containers.RepeatedScalarFieldContainer[str]
    message: str
    def __init__(self, added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., changed: _Optional[_Iterable[str]] = ..., unchanged: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ...) -> None: ...
