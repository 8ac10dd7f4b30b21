from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostFacts(_message.Message):
    __slots__ = ("hostname", "cpu_count", "load1", "load5", "load15", "memory_total_bytes", "memory_available_bytes", "disk_path", "disk_total_bytes", "disk_free_bytes", "boot_time_unix", "platform", "cpu_percent")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOAD1_FIELD_NUMBER: _ClassVar[int]
    LOAD5_FIELD_NUMBER: _ClassVar[int]
    LOAD15_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_PATH_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BOOT_TIME_UNIX_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    cpu_count: int
    load1: float
    load5: float
    load15: float
    memory_total_bytes: int
    memory_available_bytes: int
    disk_path: str
    disk_total_bytes: int
    disk_free_bytes: int
    boot_time_unix: float
    platform: str
    cpu_percent: float
    def __init__(self, hostname: _Optional[str] = ..., cpu_count: _Optional[int] = ..., load1: _Optional[float] = ..., load5: _Optional[float] = ..., load15: _Optional[float] = ..., memory_total_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., disk_path: _Optional[str] = ..., disk_total_bytes: _Optional[int] = ..., disk_free_bytes: _Optional[int] = ..., boot_time_unix: _Optional[float] = ..., platform: _Optional[str] = ..., cpu_percent: _Optional[float] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("version", "uptime_seconds", "facts", "name", "hub_address", "registered", "started_unix", "last_heartbeat_unix")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HUB_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_UNIX_FIELD_NUMBER: _ClassVar[int]
    version: str
    uptime_seconds: float
    facts: HostFacts
    name: str
    hub_address: str
    registered: bool
    started_unix: float
    last_heartbeat_unix: float
    def __init__(self, version: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., facts: _Optional[_Union[HostFacts, _Mapping]] = ..., name: _Optional[str] = ..., hub_address: _Optional[str] = ..., registered: _Optional[bool] = ..., started_unix: _Optional[float] = ..., last_heartbeat_unix: _Optional[float] = ...) -> None: ...
