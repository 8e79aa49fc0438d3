"""Disaster recovery of a pair of deployments: the façade's ``DrPair``, blocking and asyncio.

A is the primary deployment, B the standby (each a standalone server, a sentinel-managed group or a cluster; a URL
string is a standalone server). ``init`` writes the pair's state record, ``run()`` runs the job of the current direction
and follows the record, and the four calls move the pair: ``failover`` (B serves), ``recover`` (B's changes go
back to A), ``switchback`` (A serves again, without a full copy). Every call is fenced by the record's epoch and
idempotent: call it again after a crash.

>>> from redis_ferry import DrPair
>>> pair = DrPair(name="orders", a="redis://10.0.0.1:6379", b="redis://10.0.1.1:6379")  # doctest: +SKIP
>>> pair.init().phase                                                                   # doctest: +SKIP
'normal'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, AsyncIterator, Dict, Iterator, Mapping, Optional, Type, Union

from . import _native
from ._convert import endpoint_spec, from_dict, to_json
from ._native import ConfigError
from .sync import Status

__all__ = [
    "DrEvent",
    "DrEvents",
    "DrPair",
    "DrRun",
    "DrRunStatus",
    "DrStatus",
    "FailoverReport",
    "RecoverReport",
    "SwitchbackReport",
]

#: A pair's configuration: ferry's DR schema as a dict (``name``, ``a``, ``b``, optional ``limits`` and
#: ``timing``), or the path of a TOML file.
DrConfig = Union[Mapping[str, Any], str, "os.PathLike[str]"]


@dataclass(frozen=True)
class DrStatus:
    """Where the pair is: ``phase`` (uninitialized, normal, failed_over, recovering), the ``primary`` side
    (``"a"`` or ``"b"``), the ``direction`` of the job that runs (``"a_to_b"``, ``"b_to_a"`` or None), each
    side's record epoch, and ``next``, the next call in words."""

    name: str
    state: Optional[Dict[str, Any]]
    phase: str
    epoch: int
    primary: str
    direction: Optional[str]
    a_epoch: Optional[int]
    b_epoch: Optional[int]
    a_error: Optional[str]
    b_error: Optional[str]
    next: str
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FailoverReport:
    """What ``failover`` recorded: the RPO (the last position of A's stream B had applied), B's own position,
    the bytes of A's stream B had not applied (None when A did not answer); ``changed`` is False on a retry."""

    rpo: Optional[Dict[str, Any]]
    b_position: Dict[str, Any]
    lag_bytes: Optional[int]
    epoch: int
    changed: bool
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecoverReport:
    """How ``recover`` ended: ``outcome`` is incremental, full_copy, refused (``reason`` says why; call again
    with ``choice="b_wins"`` or ``"abort"``) or aborted."""

    outcome: str
    extra_writes_on_a: Optional[int]
    b_backlog_holds: Optional[bool]
    reason: str
    epoch: int
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SwitchbackReport:
    """What ``switchback`` did: the write pause on B in milliseconds (None when it was already done), A's
    position the A -> B job continues from; ``changed`` is False on a retry."""

    write_pause_ms: Optional[int]
    a_position: Dict[str, Any]
    epoch: int
    changed: bool
    #: Writes B took after A took over (only when this call finished a switchback another call left half done
    #: after B's pause ran out): A does not have them.
    writes_on_b_after_switch: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DrRunStatus:
    """What a running pair does: the record it follows, the job of the current direction and its status."""

    epoch: int
    phase: str
    primary: str
    direction: Optional[str]
    job: Optional[Status]
    last_error: Optional[str]
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_json(cls, text: str) -> "DrRunStatus":
        data = json.loads(text)
        job = data.get("job")
        data["job"] = Status._from_json(json.dumps(job)) if job is not None else None
        return from_dict(cls, data)


@dataclass(frozen=True)
class DrEvent:
    """Something that happened to a running pair: ``type`` is ``primary`` (``data["side"]``, ``data["phase"]``,
    ``data["epoch"]``: applications follow it), ``job_started``, ``job_ended`` or ``job`` (an event of the
    running job), or a newer kind."""

    type: str
    data: Dict[str, Any]

    @classmethod
    def _from_json(cls, text: str) -> "DrEvent":
        data = json.loads(text)
        kind = data.pop("type")
        return cls(type=str(kind), data=data)


class DrEvents:
    """A running pair's events from the moment :meth:`DrRun.events` was called (``for`` or ``async for``); the
    iteration ends when the run has stopped."""

    def __init__(self, native: _native.DrEvents) -> None:
        self._native = native

    def __iter__(self) -> Iterator[DrEvent]:
        return self

    def __next__(self) -> DrEvent:
        text = self._native.next()
        if text is None:
            raise StopIteration
        return DrEvent._from_json(text)

    def __aiter__(self) -> AsyncIterator[DrEvent]:
        return self

    async def __anext__(self) -> DrEvent:
        text = await self._native.next_async()
        if text is None:
            raise StopAsyncIteration
        return DrEvent._from_json(text)


class DrRun:
    """The job of the pair's current direction, following the record across epochs (``DrPair.run()``). Leaving
    a ``with`` block stops it (what was received is written and checkpointed)."""

    def __init__(self, native: _native.DrRun) -> None:
        self._native = native

    def status(self) -> DrRunStatus:
        """A snapshot: the record followed and the job's status."""
        return DrRunStatus._from_json(self._native.status())

    def events(self) -> DrEvents:
        """The run's events from now on."""
        return DrEvents(self._native.events())

    def request_stop(self) -> None:
        """Ask the run to stop without waiting."""
        self._native.request_stop()

    def stop(self) -> DrRunStatus:
        """Stop the job (drain, commit) and the run; the last status."""
        return DrRunStatus._from_json(self._native.stop())

    async def stop_async(self) -> DrRunStatus:
        """:meth:`stop` for asyncio."""
        return DrRunStatus._from_json(await self._native.stop_async())

    def __enter__(self) -> "DrRun":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    async def __aenter__(self) -> "DrRun":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.stop_async()


def _side(spec: Any, what: str) -> Any:
    return endpoint_spec(spec, what) if isinstance(spec, (str, Mapping)) else spec


class DrPair:
    """A disaster-recovery pair: ``DrPair(config)`` with a dict or a TOML path, or keyword arguments (``name``,
    ``a``, ``b``, ``limits``, ``timing``). Checked at once (:class:`redis_ferry.ConfigError`), nothing is
    connected until a call. Each call has an ``_async`` twin for asyncio."""

    def __init__(self, config: Optional[DrConfig] = None, /, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("give the configuration either as one argument or as keyword arguments, not both")
        if isinstance(config, (str, os.PathLike)):
            self._native = _native.DrPair.from_path(os.fspath(config))
            return
        data: Dict[str, Any] = dict(config) if config is not None else dict(kwargs)
        for key in ("a", "b"):
            if key in data:
                data[key] = _side(data[key], key)
        self._native = _native.DrPair.from_json(to_json(data, "the DR configuration"))

    def status(self) -> DrStatus:
        """Where the pair is and the next call (reads both sides; one that does not answer is reported)."""
        return from_dict(DrStatus, json.loads(self._native.status()))

    async def status_async(self) -> DrStatus:
        """:meth:`status` for asyncio."""
        return from_dict(DrStatus, json.loads(await self._native.status_async()))

    def init(self) -> DrStatus:
        """Write the first record (phase normal, epoch 1): :meth:`run` then does the A -> B full copy."""
        return from_dict(DrStatus, json.loads(self._native.init()))

    async def init_async(self) -> DrStatus:
        """:meth:`init` for asyncio."""
        return from_dict(DrStatus, json.loads(await self._native.init_async()))

    def failover(self) -> FailoverReport:
        """Fence A -> B and make B the primary (A is lost, or an operator decides)."""
        return from_dict(FailoverReport, json.loads(self._native.failover()))

    async def failover_async(self) -> FailoverReport:
        """:meth:`failover` for asyncio."""
        return from_dict(FailoverReport, json.loads(await self._native.failover_async()))

    def recover(self, choice: str = "none") -> RecoverReport:
        """A is back: write B's changes to A (incremental when A holds nothing beyond what B received).
        ``choice``: ``"none"`` (incremental only), ``"b_wins"`` (full copy of B into A) or ``"abort"``."""
        return from_dict(RecoverReport, json.loads(self._native.recover(choice)))

    async def recover_async(self, choice: str = "none") -> RecoverReport:
        """:meth:`recover` for asyncio."""
        return from_dict(RecoverReport, json.loads(await self._native.recover_async(choice)))

    def switchback(self) -> SwitchbackReport:
        """Make A the primary again: wait for A to catch up, pause writes on B briefly, drain, switch."""
        return from_dict(SwitchbackReport, json.loads(self._native.switchback()))

    async def switchback_async(self) -> SwitchbackReport:
        """:meth:`switchback` for asyncio."""
        return from_dict(SwitchbackReport, json.loads(await self._native.switchback_async()))

    def run(self) -> DrRun:
        """Start the job of the current direction; it follows the record (a call by this or another process)."""
        return DrRun(self._native.run())
