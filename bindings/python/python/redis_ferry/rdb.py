"""Reading RDB files: every key with its value as Python types, streamed in bounded memory.

>>> from redis_ferry import rdb
>>> for entry in rdb.open("dump.rdb"):          # doctest: +SKIP
...     print(entry.db, entry.key, entry.type, entry.expire_at_ms)

Values: ``string`` -> ``bytes``; ``list`` -> ``list[bytes]``; ``set`` -> ``set[bytes]``; ``zset`` ->
``list[tuple[bytes, float]]`` in ``ZRANGE`` order (by score, then member); ``hash`` -> ``dict[bytes, bytes]``; ``stream`` -> a ``dict`` with
``entries`` (``[(id, {field: value})]`` as XRANGE gives them), ``length``, ``last_id``, ``first_id``,
``max_deleted_id``, ``entries_added`` and ``groups``; ``module`` -> a ``dict`` with ``module_id``, ``name``,
``encver`` and the raw ``payload``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Union

from . import _native
from ._convert import EndpointSpec, endpoint_spec, from_dict, to_json
from ._native import Entry, RdbReader
from .sync import PolicyStatus

__all__ = [
    "BigKey",
    "Entry",
    "RdbReader",
    "RdbStats",
    "RestoreReport",
    "TypeStats",
    "open",
    "restore",
    "restore_async",
    "stats",
]

PathLike = Union[str, "os.PathLike[str]"]


def open(path: PathLike) -> RdbReader:  # noqa: A001 - mirrors the builtin on purpose
    """Iterate the keys of the RDB file at ``path``; also a context manager that closes the file.

    Raises :class:`redis_ferry.DataError` when the file cannot be opened and (while iterating) when its content
    is not valid RDB data; keys before the damage have been yielded by then.
    """
    return RdbReader(os.fspath(path))


@dataclass(frozen=True)
class TypeStats:
    """Keys and serialized bytes of one type in one database."""

    keys: int
    bytes: int
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BigKey:
    """One of the biggest keys (``key`` with non-UTF-8 bytes escaped)."""

    db: int
    key: str
    type: str
    bytes: int
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RdbStats:
    """A summary of an RDB file."""

    version: int
    aux: Dict[str, str]
    keys: int
    keys_with_expiry: int
    per_db: Dict[int, Dict[str, TypeStats]]
    encodings: Dict[str, int]
    expiry_histogram: Dict[str, int]
    biggest: List[BigKey]
    functions: int
    checksum: str
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore` wrote."""

    keys_restored: int
    keys_skipped: int
    keys_as_commands: int
    keys_reencoded: int
    keys_filtered: int
    bytes_written: int
    #: The keys ``target_policy="skip"`` or ``"convert"`` left out or wrote with a loss.
    policy: PolicyStatus = field(default_factory=PolicyStatus)
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_json(cls, text: str) -> "RestoreReport":
        data = json.loads(text)
        data["policy"] = PolicyStatus._from_dict(data.get("policy") or {})
        return from_dict(cls, data)


def stats(path: PathLike) -> RdbStats:
    """Summarize the RDB file at ``path``: keys per database and type, encodings, expiries, biggest keys."""
    data = json.loads(_native.rdb_stats_json(os.fspath(path)))
    data["per_db"] = {
        int(db): {t: from_dict(TypeStats, v) for t, v in types.items()} for db, types in data["per_db"].items()
    }
    data["biggest"] = [from_dict(BigKey, b) for b in data["biggest"]]
    return from_dict(RdbStats, data)


def _restore_args(path: PathLike, target: EndpointSpec, options: Dict[str, Any]) -> List[str]:
    return [
        os.fspath(path),
        to_json(endpoint_spec(target, "target"), "target"),
        to_json(options, "the restore options"),
    ]


def restore(path: PathLike, target: EndpointSpec, **options: Any) -> RestoreReport:
    """Write every key of the RDB file into ``target`` (a URL or ferry's target dict), with RESTORE ... ABSTTL
    (re-encoded for an older target). Options: ``conflict`` ("panic", "rewrite", "skip"), ``dbs``, ``db_map``
    (the file's database to the target's, ``{"0": 3}``), ``max_restore_bytes``, ``target_policy`` ("stop",
    "skip", "convert": keys the target cannot hold, such as hash field expiries before Redis 7.4 or a module
    type it does not load)."""
    return RestoreReport._from_json(_native.rdb_restore_json(*_restore_args(path, target, options)))


async def restore_async(path: PathLike, target: EndpointSpec, **options: Any) -> RestoreReport:
    """:func:`restore` for asyncio."""
    text = await _native.rdb_restore_json_async(*_restore_args(path, target, options))
    return RestoreReport._from_json(text)
