from backendai.v1 import agent_pb2 as _agent_pb2
from backendai.v1 import events_pb2 as _events_pb2
from backendai.v1 import manager_pb2 as _manager_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_STATE_UNSPECIFIED: _ClassVar[RolloutState]
    ROLLOUT_STATE_PLANNED: _ClassVar[RolloutState]
    ROLLOUT_STATE_UPDATING_HUB: _ClassVar[RolloutState]
    ROLLOUT_STATE_RUNNING: _ClassVar[RolloutState]
    ROLLOUT_STATE_WAITING: _ClassVar[RolloutState]
    ROLLOUT_STATE_PAUSED: _ClassVar[RolloutState]
    ROLLOUT_STATE_ROLLING_BACK: _ClassVar[RolloutState]
    ROLLOUT_STATE_ABORTING: _ClassVar[RolloutState]
    ROLLOUT_STATE_SUCCEEDED: _ClassVar[RolloutState]
    ROLLOUT_STATE_FAILED: _ClassVar[RolloutState]
    ROLLOUT_STATE_ROLLED_BACK: _ClassVar[RolloutState]
    ROLLOUT_STATE_ABORTED: _ClassVar[RolloutState]
    ROLLOUT_STATE_HALTING: _ClassVar[RolloutState]

class HostRolloutState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOST_ROLLOUT_STATE_UNSPECIFIED: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_PENDING: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_UPDATING: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_VERIFYING: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_SUCCEEDED: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_FAILED: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_UNREACHABLE: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_ROLLING_BACK: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_ROLLED_BACK: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_ROLLBACK_FAILED: _ClassVar[HostRolloutState]
    HOST_ROLLOUT_STATE_SKIPPED: _ClassVar[HostRolloutState]
ROLLOUT_STATE_UNSPECIFIED: RolloutState
ROLLOUT_STATE_PLANNED: RolloutState
ROLLOUT_STATE_UPDATING_HUB: RolloutState
ROLLOUT_STATE_RUNNING: RolloutState
ROLLOUT_STATE_WAITING: RolloutState
ROLLOUT_STATE_PAUSED: RolloutState
ROLLOUT_STATE_ROLLING_BACK: RolloutState
ROLLOUT_STATE_ABORTING: RolloutState
ROLLOUT_STATE_SUCCEEDED: RolloutState
ROLLOUT_STATE_FAILED: RolloutState
ROLLOUT_STATE_ROLLED_BACK: RolloutState
ROLLOUT_STATE_ABORTED: RolloutState
ROLLOUT_STATE_HALTING: RolloutState
HOST_ROLLOUT_STATE_UNSPECIFIED: HostRolloutState
HOST_ROLLOUT_STATE_PENDING: HostRolloutState
HOST_ROLLOUT_STATE_UPDATING: HostRolloutState
HOST_ROLLOUT_STATE_VERIFYING: HostRolloutState
HOST_ROLLOUT_STATE_SUCCEEDED: HostRolloutState
HOST_ROLLOUT_STATE_FAILED: HostRolloutState
HOST_ROLLOUT_STATE_UNREACHABLE: HostRolloutState
HOST_ROLLOUT_STATE_ROLLING_BACK: HostRolloutState
HOST_ROLLOUT_STATE_ROLLED_BACK: HostRolloutState
HOST_ROLLOUT_STATE_ROLLBACK_FAILED: HostRolloutState
HOST_ROLLOUT_STATE_SKIPPED: HostRolloutState

class HubInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HubInfo(_message.Message):
    __slots__ = ("version", "uptime_seconds", "hostname", "host_count", "active_rollout_id", "started_unix", "leader", "leader_address", "hub_id", "epoch", "store_backend", "lease_expires_unix", "http_address", "http_scheme")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    HOST_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HUB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STORE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HTTP_SCHEME_FIELD_NUMBER: _ClassVar[int]
    version: str
    uptime_seconds: float
    hostname: str
    host_count: int
    active_rollout_id: str
    started_unix: float
    leader: bool
    leader_address: str
    hub_id: str
    epoch: int
    store_backend: str
    lease_expires_unix: float
    http_address: str
    http_scheme: str
    def __init__(self, version: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., hostname: _Optional[str] = ..., host_count: _Optional[int] = ..., active_rollout_id: _Optional[str] = ..., started_unix: _Optional[float] = ..., leader: _Optional[bool] = ..., leader_address: _Optional[str] = ..., hub_id: _Optional[str] = ..., epoch: _Optional[int] = ..., store_backend: _Optional[str] = ..., lease_expires_unix: _Optional[float] = ..., http_address: _Optional[str] = ..., http_scheme: _Optional[str] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("name", "manager_address", "labels", "role", "source", "reachable", "state", "version", "last_seen_unix", "message", "service", "update", "agent_address", "agent_version", "agent_last_heartbeat_unix", "facts", "agent_connected", "last_contact_unix", "health")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    MANAGER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_LAST_HEARTBEAT_UNIX_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    AGENT_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_CONTACT_UNIX_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    manager_address: str
    labels: _containers.ScalarMap[str, str]
    role: str
    source: str
    reachable: bool
    state: _manager_pb2.ServiceState
    version: str
    last_seen_unix: float
    message: str
    service: str
    update: _manager_pb2.UpdateSummary
    agent_address: str
    agent_version: str
    agent_last_heartbeat_unix: float
    facts: _agent_pb2.HostFacts
    agent_connected: bool
    last_contact_unix: float
    health: str
    def __init__(self, name: _Optional[str] = ..., manager_address: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., role: _Optional[str] = ..., source: _Optional[str] = ..., reachable: _Optional[bool] = ..., state: _Optional[_Union[_manager_pb2.ServiceState, str]] = ..., version: _Optional[str] = ..., last_seen_unix: _Optional[float] = ..., message: _Optional[str] = ..., service: _Optional[str] = ..., update: _Optional[_Union[_manager_pb2.UpdateSummary, _Mapping]] = ..., agent_address: _Optional[str] = ..., agent_version: _Optional[str] = ..., agent_last_heartbeat_unix: _Optional[float] = ..., facts: _Optional[_Union[_agent_pb2.HostFacts, _Mapping]] = ..., agent_connected: _Optional[bool] = ..., last_contact_unix: _Optional[float] = ..., health: _Optional[str] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ("labels", "names")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts",)
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("name", "role", "manager_address", "agent_address", "labels", "version", "facts")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MANAGER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    manager_address: str
    agent_address: str
    labels: _containers.ScalarMap[str, str]
    version: str
    facts: _agent_pb2.HostFacts
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., manager_address: _Optional[str] = ..., agent_address: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., version: _Optional[str] = ..., facts: _Optional[_Union[_agent_pb2.HostFacts, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("name", "heartbeat_interval_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    heartbeat_interval_seconds: float
    def __init__(self, name: _Optional[str] = ..., heartbeat_interval_seconds: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("name", "version", "uptime_seconds", "facts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    uptime_seconds: float
    facts: _agent_pb2.HostFacts
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., facts: _Optional[_Union[_agent_pb2.HostFacts, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("heartbeat_interval_seconds", "reregister")
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REREGISTER_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_seconds: float
    reregister: bool
    def __init__(self, heartbeat_interval_seconds: _Optional[float] = ..., reregister: _Optional[bool] = ...) -> None: ...

class RolloutTarget(_message.Message):
    __slots__ = ("labels", "hosts")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class RolloutStrategy(_message.Message):
    __slots__ = ("waves", "max_parallel", "min_healthy_seconds", "healthy_deadline_seconds", "step_deadline_seconds", "max_failures_per_wave", "max_failures_total", "pause_seconds", "pause_until_promote", "auto_rollback", "seed")
    WAVES_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    MIN_HEALTHY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STEP_DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURES_PER_WAVE_FIELD_NUMBER: _ClassVar[int]
    MAX_FAILURES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PAUSE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PAUSE_UNTIL_PROMOTE_FIELD_NUMBER: _ClassVar[int]
    AUTO_ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    waves: _containers.RepeatedScalarFieldContainer[str]
    max_parallel: int
    min_healthy_seconds: float
    healthy_deadline_seconds: float
    step_deadline_seconds: float
    max_failures_per_wave: str
    max_failures_total: str
    pause_seconds: float
    pause_until_promote: bool
    auto_rollback: bool
    seed: int
    def __init__(self, waves: _Optional[_Iterable[str]] = ..., max_parallel: _Optional[int] = ..., min_healthy_seconds: _Optional[float] = ..., healthy_deadline_seconds: _Optional[float] = ..., step_deadline_seconds: _Optional[float] = ..., max_failures_per_wave: _Optional[str] = ..., max_failures_total: _Optional[str] = ..., pause_seconds: _Optional[float] = ..., pause_until_promote: _Optional[bool] = ..., auto_rollback: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class StartRolloutRequest(_message.Message):
    __slots__ = ("version", "target", "strategy", "dry_run", "service", "include_hub", "description", "start_stopped")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HUB_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    START_STOPPED_FIELD_NUMBER: _ClassVar[int]
    version: str
    target: RolloutTarget
    strategy: RolloutStrategy
    dry_run: bool
    service: str
    include_hub: bool
    description: str
    start_stopped: bool
    def __init__(self, version: _Optional[str] = ..., target: _Optional[_Union[RolloutTarget, _Mapping]] = ..., strategy: _Optional[_Union[RolloutStrategy, _Mapping]] = ..., dry_run: _Optional[bool] = ..., service: _Optional[str] = ..., include_hub: _Optional[bool] = ..., description: _Optional[str] = ..., start_stopped: _Optional[bool] = ...) -> None: ...

class PackageCheck(_message.Message):
    __slots__ = ("service", "url", "available", "message", "hosts", "checked", "package", "asked")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    ASKED_FIELD_NUMBER: _ClassVar[int]
    service: str
    url: str
    available: bool
    message: str
    hosts: _containers.RepeatedScalarFieldContainer[str]
    checked: bool
    package: str
    asked: str
    def __init__(self, service: _Optional[str] = ..., url: _Optional[str] = ..., available: _Optional[bool] = ..., message: _Optional[str] = ..., hosts: _Optional[_Iterable[str]] = ..., checked: _Optional[bool] = ..., package: _Optional[str] = ..., asked: _Optional[str] = ...) -> None: ...

class Wave(_message.Message):
    __slots__ = ("index", "spec", "hosts", "failures", "started", "done")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    index: int
    spec: str
    hosts: _containers.RepeatedScalarFieldContainer[str]
    failures: int
    started: bool
    done: bool
    def __init__(self, index: _Optional[int] = ..., spec: _Optional[str] = ..., hosts: _Optional[_Iterable[str]] = ..., failures: _Optional[int] = ..., started: _Optional[bool] = ..., done: _Optional[bool] = ...) -> None: ...

class RolloutHost(_message.Message):
    __slots__ = ("name", "wave", "state", "from_version", "operation_id", "message", "started_unix", "finished_unix", "attempts", "step", "origin", "failed_step", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    FAILED_STEP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    wave: int
    state: HostRolloutState
    from_version: str
    operation_id: str
    message: str
    started_unix: float
    finished_unix: float
    attempts: int
    step: str
    origin: str
    failed_step: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., wave: _Optional[int] = ..., state: _Optional[_Union[HostRolloutState, str]] = ..., from_version: _Optional[str] = ..., operation_id: _Optional[str] = ..., message: _Optional[str] = ..., started_unix: _Optional[float] = ..., finished_unix: _Optional[float] = ..., attempts: _Optional[int] = ..., step: _Optional[str] = ..., origin: _Optional[str] = ..., failed_step: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OutcomeCounts(_message.Message):
    __slots__ = ("total", "pending", "in_progress", "succeeded", "failed", "unreachable", "rolled_back", "rollback_failed", "skipped")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FAILED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    total: int
    pending: int
    in_progress: int
    succeeded: int
    failed: int
    unreachable: int
    rolled_back: int
    rollback_failed: int
    skipped: int
    def __init__(self, total: _Optional[int] = ..., pending: _Optional[int] = ..., in_progress: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., unreachable: _Optional[int] = ..., rolled_back: _Optional[int] = ..., rollback_failed: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("id", "version", "state", "target", "strategy", "seed", "service", "include_hub", "waves", "hosts", "counts", "current_wave", "created_unix", "updated_unix", "finished_unix", "message", "next_event_index", "resume_at_unix", "description", "awaiting_promote", "packages", "start_stopped")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HUB_FIELD_NUMBER: _ClassVar[int]
    WAVES_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_WAVE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_EVENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    RESUME_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    AWAITING_PROMOTE_FIELD_NUMBER: _ClassVar[int]
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    START_STOPPED_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    state: RolloutState
    target: RolloutTarget
    strategy: RolloutStrategy
    seed: int
    service: str
    include_hub: bool
    waves: _containers.RepeatedCompositeFieldContainer[Wave]
    hosts: _containers.RepeatedCompositeFieldContainer[RolloutHost]
    counts: OutcomeCounts
    current_wave: int
    created_unix: float
    updated_unix: float
    finished_unix: float
    message: str
    next_event_index: int
    resume_at_unix: float
    description: str
    awaiting_promote: bool
    packages: _containers.RepeatedCompositeFieldContainer[PackageCheck]
    start_stopped: bool
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[_Union[RolloutState, str]] = ..., target: _Optional[_Union[RolloutTarget, _Mapping]] = ..., strategy: _Optional[_Union[RolloutStrategy, _Mapping]] = ..., seed: _Optional[int] = ..., service: _Optional[str] = ..., include_hub: _Optional[bool] = ..., waves: _Optional[_Iterable[_Union[Wave, _Mapping]]] = ..., hosts: _Optional[_Iterable[_Union[RolloutHost, _Mapping]]] = ..., counts: _Optional[_Union[OutcomeCounts, _Mapping]] = ..., current_wave: _Optional[int] = ..., created_unix: _Optional[float] = ..., updated_unix: _Optional[float] = ..., finished_unix: _Optional[float] = ..., message: _Optional[str] = ..., next_event_index: _Optional[int] = ..., resume_at_unix: _Optional[float] = ..., description: _Optional[str] = ..., awaiting_promote: _Optional[bool] = ..., packages: _Optional[_Iterable[_Union[PackageCheck, _Mapping]]] = ..., start_stopped: _Optional[bool] = ...) -> None: ...

class StartRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListRolloutsRequest(_message.Message):
    __slots__ = ("limit", "active_only", "with_hosts")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    WITH_HOSTS_FIELD_NUMBER: _ClassVar[int]
    limit: int
    active_only: bool
    with_hosts: bool
    def __init__(self, limit: _Optional[int] = ..., active_only: _Optional[bool] = ..., with_hosts: _Optional[bool] = ...) -> None: ...

class ListRolloutsResponse(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[Rollout]
    def __init__(self, rollouts: _Optional[_Iterable[_Union[Rollout, _Mapping]]] = ...) -> None: ...

class RolloutControlRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchRolloutRequest(_message.Message):
    __slots__ = ("id", "from_index", "no_follow")
    ID_FIELD_NUMBER: _ClassVar[int]
    FROM_INDEX_FIELD_NUMBER: _ClassVar[int]
    NO_FOLLOW_FIELD_NUMBER: _ClassVar[int]
    id: str
    from_index: int
    no_follow: bool
    def __init__(self, id: _Optional[str] = ..., from_index: _Optional[int] = ..., no_follow: _Optional[bool] = ...) -> None: ...

class RolloutEvent(_message.Message):
    __slots__ = ("index", "rollout_id", "at_unix", "kind", "host", "wave", "message", "state", "host_state", "counts", "final")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HOST_STATE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    index: int
    rollout_id: str
    at_unix: float
    kind: str
    host: str
    wave: int
    message: str
    state: RolloutState
    host_state: HostRolloutState
    counts: OutcomeCounts
    final: bool
    def __init__(self, index: _Optional[int] = ..., rollout_id: _Optional[str] = ..., at_unix: _Optional[float] = ..., kind: _Optional[str] = ..., host: _Optional[str] = ..., wave: _Optional[int] = ..., message: _Optional[str] = ..., state: _Optional[_Union[RolloutState, str]] = ..., host_state: _Optional[_Union[HostRolloutState, str]] = ..., counts: _Optional[_Union[OutcomeCounts, _Mapping]] = ..., final: _Optional[bool] = ...) -> None: ...

class HostStatusRequest(_message.Message):
    __slots__ = ("hosts", "timeout_seconds")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: float
    def __init__(self, hosts: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class HostServices(_message.Message):
    __slots__ = ("host", "reachable", "error", "services")
    HOST_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    host: str
    reachable: bool
    error: str
    services: _containers.RepeatedCompositeFieldContainer[_manager_pb2.ServiceStatus]
    def __init__(self, host: _Optional[str] = ..., reachable: _Optional[bool] = ..., error: _Optional[str] = ..., services: _Optional[_Iterable[_Union[_manager_pb2.ServiceStatus, _Mapping]]] = ...) -> None: ...

class HostStatusResponse(_message.Message):
    __slots__ = ("hosts",)
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[HostServices]
    def __init__(self, hosts: _Optional[_Iterable[_Union[HostServices, _Mapping]]] = ...) -> None: ...

class RestartServiceRequest(_message.Message):
    __slots__ = ("host", "service", "force")
    HOST_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    host: str
    service: str
    force: bool
    def __init__(self, host: _Optional[str] = ..., service: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class StartServiceRequest(_message.Message):
    __slots__ = ("host", "service", "force")
    HOST_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    host: str
    service: str
    force: bool
    def __init__(self, host: _Optional[str] = ..., service: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class StopServiceRequest(_message.Message):
    __slots__ = ("host", "service", "timeout_seconds", "force")
    HOST_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    host: str
    service: str
    timeout_seconds: float
    force: bool
    def __init__(self, host: _Optional[str] = ..., service: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., force: _Optional[bool] = ...) -> None: ...

class StreamHostLogsRequest(_message.Message):
    __slots__ = ("host", "service", "tail_lines", "no_follow")
    HOST_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    NO_FOLLOW_FIELD_NUMBER: _ClassVar[int]
    host: str
    service: str
    tail_lines: int
    no_follow: bool
    def __init__(self, host: _Optional[str] = ..., service: _Optional[str] = ..., tail_lines: _Optional[int] = ..., no_follow: _Optional[bool] = ...) -> None: ...
