"""Reading RDB files: every key with its value as Python types, streamed in bounded memory.

>>> from redis_ferry import rdb
>>> for entry in rdb.open("dump.rdb"):          # doctest: +SKIP
...     print(entry.db, entry.key, entry.type, entry.expire_at_ms)

Values: ``string`` -> ``bytes``; ``list`` -> ``list[bytes]``; ``set`` -> ``set[bytes]``; ``zset`` ->
``list[tuple[bytes, float]]`` in file order; ``hash`` -> ``dict[bytes, bytes]``; ``stream`` -> a ``dict`` with
``entries`` (``[(id, {field: value})]`` as XRANGE gives them), ``length``, ``last_id``, ``first_id``,
``max_deleted_id``, ``entries_added`` and ``groups``; ``module`` -> a ``dict`` with ``module_id``, ``name``,
``encver`` and the raw ``payload``.
"""

from __future__ import annotations

import os
from typing import Union

from ._native import Entry, RdbReader

__all__ = ["Entry", "RdbReader", "open"]

PathLike = Union[str, "os.PathLike[str]"]


def open(path: PathLike) -> RdbReader:  # noqa: A001 - mirrors the builtin on purpose
    """Iterate the keys of the RDB file at ``path``; also a context manager that closes the file.

    Raises :class:`redis_ferry.ConfigError` when the file cannot be opened and :class:`redis_ferry.DataError`
    (while iterating) when its content is not valid RDB data.
    """
    return RdbReader(os.fspath(path))
