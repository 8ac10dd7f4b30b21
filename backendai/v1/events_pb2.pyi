from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("id", "at_unix", "kind", "subject", "message", "fields", "actor", "transport", "peer", "result", "host")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    id: int
    at_unix: float
    kind: str
    subject: str
    message: str
    fields: _containers.ScalarMap[str, str]
    actor: str
    transport: str
    peer: str
    result: str
    host: str
    def __init__(self, id: _Optional[int] = ..., at_unix: _Optional[float] = ..., kind: _Optional[str] = ..., subject: _Optional[str] = ..., message: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ..., actor: _Optional[str] = ..., transport: _Optional[str] = ..., peer: _Optional[str] = ..., result: _Optional[str] = ..., host: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("kind", "subject", "since_unix", "until_unix", "after_id", "limit", "newest_first", "before_id", "host")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIRST_FIELD_NUMBER: _ClassVar[int]
    BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    kind: str
    subject: str
    since_unix: float
    until_unix: float
    after_id: int
    limit: int
    newest_first: bool
    before_id: int
    host: str
    def __init__(self, kind: _Optional[str] = ..., subject: _Optional[str] = ..., since_unix: _Optional[float] = ..., until_unix: _Optional[float] = ..., after_id: _Optional[int] = ..., limit: _Optional[int] = ..., newest_first: _Optional[bool] = ..., before_id: _Optional[int] = ..., host: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_after_id", "last_id", "oldest_id")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ID_FIELD_NUMBER: _ClassVar[int]
    OLDEST_ID_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_after_id: int
    last_id: int
    oldest_id: int
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_after_id: _Optional[int] = ..., last_id: _Optional[int] = ..., oldest_id: _Optional[int] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("after_id", "kind", "subject", "from_now", "host")
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    FROM_NOW_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    after_id: int
    kind: str
    subject: str
    from_now: bool
    host: str
    def __init__(self, after_id: _Optional[int] = ..., kind: _Optional[str] = ..., subject: _Optional[str] = ..., from_now: _Optional[bool] = ..., host: _Optional[str] = ...) -> None: ...
