"""Sync jobs and verification: the façade's ``SyncJob`` and ``verify``, blocking and asyncio.

>>> from redis_ferry import SyncJob
>>> with SyncJob(source="redis://127.0.0.1:6379", target="redis://127.0.0.1:6380") as job:  # doctest: +SKIP
...     print(job.status().phase)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Tuple, Type, Union

from . import _native
from ._convert import EndpointSpec, endpoint_spec, from_dict, to_json
from ._native import ConfigError, Stopped

__all__ = [
    "Difference",
    "Event",
    "Events",
    "ShardStatus",
    "Status",
    "SyncJob",
    "VerifyReport",
    "verify",
    "verify_async",
]

#: A configuration: ferry's schema as a dict, or the path of a TOML file (ferry's schema, RedisShake v3
#: ``sync.toml`` or v4 ``shake.toml``).
Config = Union[Mapping[str, Any], str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ShardStatus:
    """One source shard of a job."""

    source: str
    phase: str
    replid: str
    source_offset: int
    applied_offset: int
    keys_copied: int
    commands_applied: int
    lag_bytes: int
    lag_ms: int
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyKey:
    """A key the target policy skipped or converted: its source ``db``, the ``key`` as :func:`verify` shows keys
    (in double quotes, bytes other than printable ASCII as ``\\xNN``) and what was lost (``loss``)."""

    db: int
    key: str
    loss: str
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyStatus:
    """What ``target_policy = "skip"`` or ``"convert"`` left out of the target or wrote with a loss since the job's
    full copy began (with checkpoints, across restarts): counts, and the first 1000 keys of each kind."""

    keys_skipped: int = 0
    keys_converted: int = 0
    commands_skipped: int = 0
    commands_converted: int = 0
    skipped: List[PolicyKey] = field(default_factory=list)
    converted: List[PolicyKey] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> "PolicyStatus":
        policy = dict(data)
        for kind in ("skipped", "converted"):
            policy[kind] = [from_dict(PolicyKey, k) for k in policy.get(kind, [])]
        return from_dict(cls, policy)


@dataclass(frozen=True)
class Status:
    """A snapshot of a job: ``phase`` is one of handshake, full_sync, incremental, reconnecting, caught_up,
    stopped."""

    phase: str
    keys_copied: int
    keys_done: int
    keys_expected: Optional[int]
    keys_skipped: int
    commands_applied: int
    commands_filtered: int
    bytes_read: int
    bytes_written: int
    ops_per_sec: float
    lag_bytes: int
    lag_ms: int
    full_syncs: int
    reconnects: int
    errors: int
    shards: List[ShardStatus]
    last_error: Optional[str]
    policy: PolicyStatus = field(default_factory=PolicyStatus)
    #: Every stream live and all that was received applied (RedisShake's ``consistent``).
    consistent: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_json(cls, text: str) -> "Status":
        data = json.loads(text)
        data["shards"] = [from_dict(ShardStatus, s) for s in data.get("shards", [])]
        data["policy"] = PolicyStatus._from_dict(data.get("policy") or {})
        return from_dict(cls, data)


@dataclass(frozen=True)
class Event:
    """Something that happened to a job, sent as it happens (docs/events.md). ``type`` is one of:

    - ``phase`` (``data["phase"]``): the job's phase (for a cluster source, combined from its shards');
    - ``shard_phase`` (``data["shard"]``, ``data["phase"]``): a shard of a cluster source entered a phase;
    - ``full_resync`` (``data["shard"]``, ``data["reason"]``): a full copy starts, and why;
    - ``reconnecting`` (``data["shard"]``, ``data["delay_ms"]``): a session ended with the ``error`` just before;
    - ``failover_followed`` (``data["new_master"]``): the sentinel-managed source failed over;
    - ``shard_failover_followed`` (``data["shard"]``, ``data["node"]``): a cluster source's shard continues on
      ``node``;
    - ``target_failover_followed`` (``data["shard"]``, ``data["new_master"]``): the sentinel-managed target
      failed over;
    - ``target_topology_changed`` (``data["shard"]``, ``data["masters"]``): a cluster target's masters changed;
    - ``error`` (``data["kind"]``, ``data["message"]``);

    or a newer kind. ``data["shard"]`` is ``None`` when the source is not a cluster."""

    type: str
    data: Dict[str, Any]

    @classmethod
    def _from_json(cls, text: str) -> "Event":
        data = json.loads(text)
        kind = data.pop("type")
        return cls(type=str(kind), data=data)


class Events:
    """A job's events from the moment :meth:`SyncJob.events` was called: iterate with ``for`` (blocking) or
    ``async for``. Iteration ends when the job has ended and every event was read; a reader that falls behind
    skips the oldest events (the job never waits for it)."""

    def __init__(self, native: _native.Events) -> None:
        self._native = native

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        text = self._native.next()
        if text is None:
            raise StopIteration
        return Event._from_json(text)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        text = await self._native.next_async()
        if text is None:
            raise StopAsyncIteration
        return Event._from_json(text)


def _config_source(config: Optional[Config], kwargs: Dict[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """``(json_text, None)`` for a dict / keyword configuration, ``(None, toml_path)`` for a file."""
    if config is not None and kwargs:
        raise ConfigError("give the configuration either as one argument or as keyword arguments, not both")
    if isinstance(config, (str, os.PathLike)):
        return None, os.fspath(config)
    data: Dict[str, Any] = dict(config) if config is not None else dict(kwargs)
    if not data:
        raise ConfigError("a sync job needs a configuration (at least source and target)")
    for key in ("source", "target"):
        if key in data:
            data[key] = endpoint_spec(data[key], key)
    return to_json(data, "the configuration"), None


class SyncJob:
    """A sync job from ``source`` to ``target``.

    The configuration is ferry's schema (the same keys as a TOML file and the CLI): a dict, the path of a TOML
    file (RedisShake's v3 ``sync.toml`` and v4 ``shake.toml`` are read too), or keyword arguments. A ``source`` or
    ``target`` given as a string is a standalone server's URL. It is checked at once (:class:`ConfigError`) and
    runs from :meth:`start` (or entering ``with`` / ``async with``) until it ends by itself (an error,
    ``until_caught_up``) or :meth:`stop`. Leaving the ``with`` block stops it: what was received is written and
    the checkpoint committed, so a new job with the same configuration resumes exactly there.
    """

    def __init__(self, config: Optional[Config] = None, /, **kwargs: Any) -> None:
        self._json, self._path = _config_source(config, kwargs)
        checked = _native.check_config(self._json, self._path)
        #: The configuration as ferry understood it (RedisShake files translated), every secret masked.
        self.config: Dict[str, Any] = json.loads(checked)
        self._handle: Optional[_native.JobHandle] = None

    def start(self) -> "SyncJob":
        """Start the job (connects in the background; progress shows in :meth:`status` and :meth:`events`)."""
        if self._handle is not None:
            raise ConfigError("this job was already started; create a new SyncJob to run it again")
        if self._json is not None:
            self._handle = _native.JobHandle.start_json(self._json)
        else:
            assert self._path is not None
            self._handle = _native.JobHandle.start_path(self._path)
        return self

    def _started(self) -> _native.JobHandle:
        if self._handle is None:
            raise Stopped("the job has not been started: call start() first")
        return self._handle

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called."""
        return self._handle is not None

    def status(self) -> Status:
        """A snapshot of the job's progress."""
        return Status._from_json(self._started().status_json())

    def is_finished(self) -> bool:
        """Whether the job has ended."""
        return self._started().is_finished()

    def events(self) -> Events:
        """The job's events from now on (``for`` or ``async for``)."""
        return Events(self._started().events())

    def request_stop(self) -> None:
        """Ask the job to stop (write what was received, commit) without waiting for it."""
        self._started().request_stop()

    def stop(self) -> Status:
        """Stop: write what was received, commit the checkpoint, return the final status. Stopping an ended
        job returns how it ended (or raises the error that ended it)."""
        return Status._from_json(self._started().stop())

    async def stop_async(self) -> Status:
        """:meth:`stop` for asyncio."""
        return Status._from_json(await self._started().stop_async())

    def wait(self, timeout: Optional[float] = None) -> Status:
        """Wait until the job ends and return its final status (raises the error that ended it). With
        ``timeout`` (seconds) raise :class:`TimeoutError` when it is still running then; the job goes on."""
        text = self._started().wait(timeout)
        if text is None:
            raise TimeoutError(f"the job was still running after {timeout} s")
        return Status._from_json(text)

    async def wait_async(self, timeout: Optional[float] = None) -> Status:
        """:meth:`wait` for asyncio (the timeout raises :class:`TimeoutError`; the job goes on)."""
        import asyncio

        aw = self._started().wait_async()
        text = await (aw if timeout is None else asyncio.wait_for(aw, timeout))
        return Status._from_json(text)

    def __enter__(self) -> "SyncJob":
        if self._handle is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._exit_stop(exc)

    def _exit_stop(self, exc: Optional[BaseException]) -> None:
        handle = self._handle
        if handle is None:
            return
        try:
            handle.stop()
        except _native.FerryError:
            # The job ended with an error: raise it unless another exception is already on its way out.
            if exc is None:
                raise

    async def __aenter__(self) -> "SyncJob":
        if self._handle is None:
            self.start()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        handle = self._handle
        if handle is None:
            return
        try:
            await handle.stop_async()
        except _native.FerryError:
            if exc is None:
                raise


@dataclass(frozen=True)
class Difference:
    """One differing key: ``kind`` is missing, extra, type, value or ttl."""

    kind: str
    db: int
    key: str
    detail: str
    #: The target's database (``db`` unless a database map sends it elsewhere).
    target_db: int = -1
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found; ``equal`` is True when nothing differs."""

    equal: bool
    keys_checked: int
    target_keys_checked: int
    missing: int
    extra_keys: int
    type_mismatch: int
    value_mismatch: int
    ttl_mismatch: int
    rechecked: int
    resolved_on_recheck: int
    dbs: List[int]
    differences: List[Difference]
    elapsed_ms: int
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_json(cls, text: str) -> "VerifyReport":
        data = json.loads(text)
        data["extra_keys"] = data.pop("extra", 0)
        data["differences"] = [from_dict(Difference, d) for d in data.get("differences", [])]
        return from_dict(cls, data)


def _verify_args(source: EndpointSpec, target: EndpointSpec, options: Dict[str, Any]) -> List[str]:
    return [
        to_json(endpoint_spec(source, "source"), "source"),
        to_json(endpoint_spec(target, "target"), "target"),
        to_json(options, "the verify options"),
    ]


def verify(source: EndpointSpec, target: EndpointSpec, **options: Any) -> VerifyReport:
    """Compare ``source`` and ``target`` key by key (types, values, expiry).

    Options are ferry's ``VerifyOptions``: ``dbs``, ``sample``, ``ttl_tolerance_ms``, ``compare`` ("auto",
    "dump", "value", "digest"), ``max_differences``, ``recheck_after_ms``, ``ignore_prefixes``, ``batch``, and a
    sync job's ``filter`` (a dict) and ``db_map`` (``{"2": 5}``) to compare what such a job copies, where it copies
    it; an unknown option raises :class:`ConfigError`. A database in a URL (``redis://host:port/2``) means what it
    means to a sync job.
    """
    return VerifyReport._from_json(_native.verify_json(*_verify_args(source, target, options)))


async def verify_async(source: EndpointSpec, target: EndpointSpec, **options: Any) -> VerifyReport:
    """:func:`verify` for asyncio."""
    return VerifyReport._from_json(await _native.verify_json_async(*_verify_args(source, target, options)))
