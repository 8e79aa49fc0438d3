"""A Sentinel-aware pool that follows the master through failovers without writing to a demoted one.

Replies come back as redis-py's parser gives them, before redis-py's per-command callbacks: ``bytes`` for bulk
and simple strings (``SET`` answers ``b"OK"``), ``int``, ``list``, ``None``, and for RESP3 replies ``dict``,
``set``, ``float`` and ``bool``. An error reply raises :class:`redis_ferry.ResponseError` (a
:class:`redis_ferry.TargetRefused`, like redis-py's ``ResponseError``; ``code`` is the reply's first word, the
message the whole reply). An error inside a pipeline's results stays in place as a ``ResponseError`` instance
unless ``raise_on_error``.

>>> from redis_ferry import SentinelPool
>>> pool = SentinelPool([("127.0.0.1", 26379)], "mymaster")       # doctest: +SKIP
>>> pool.execute_command("INCR", "counter")                         # doctest: +SKIP
1
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, List, Optional, Sequence, Tuple, Type, Union

from . import _native
from ._native import ConfigError

__all__ = ["AsyncPipeline", "AsyncSentinelPool", "Pipeline", "SentinelPool"]

#: One command argument: encoded like redis-py does (str as UTF-8, int and float as their decimal text).
Arg = Union[bytes, bytearray, memoryview, str, int, float]
#: A sentinel address: ``("host", port)`` or ``"host:port"``.
SentinelAddr = Union[Tuple[str, int], str]


def _encode(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, bool):
        raise TypeError("a bool is not a Redis argument; pass 0/1 or a string")
    if isinstance(arg, int):
        return str(arg).encode("ascii")
    if isinstance(arg, float):
        return repr(arg).encode("ascii")
    raise TypeError(f"cannot send a {type(arg).__name__} as a Redis argument")


def _command(args: Sequence[Arg]) -> List[bytes]:
    if not args:
        raise TypeError("execute_command needs at least the command name")
    return [_encode(a) for a in args]


def _addr(s: SentinelAddr) -> Tuple[str, int]:
    if isinstance(s, str):
        host, sep, port_text = s.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ConfigError(f"sentinel address {s!r} is not host:port")
        return (host.strip("[]"), int(port_text))
    name, port = s
    return (str(name), int(port))


def _pool_args(
    sentinels: Sequence[SentinelAddr],
    master_name: str,
    *,
    username: Optional[str],
    password: Optional[str],
    sentinel_username: Optional[str],
    sentinel_password: Optional[str],
    db: int,
    max_total: int,
    max_idle: int,
    min_idle: int,
    max_wait: Optional[float],
    block_when_exhausted: bool,
    test_on_borrow: bool,
    sentinel_timeout: float,
    resolve_timeout: float,
    poll_interval: float,
    listener_retry_base: float,
) -> "_native._PoolArgs":
    if isinstance(sentinels, (str, tuple)):
        raise ConfigError("sentinels must be a list of (host, port) tuples or 'host:port' strings")
    if isinstance(db, bool) or not isinstance(db, int) or not 0 <= db < 2**32:
        raise ConfigError(f"db must be a database number (0 or more), not {db!r}")
    return {
        "master_name": master_name,
        "sentinels": [_addr(s) for s in sentinels],
        "username": username,
        "password": password,
        "sentinel_username": sentinel_username,
        "sentinel_password": sentinel_password,
        "db": db,
        "max_total": max_total,
        "max_idle": max_idle,
        "min_idle": min_idle,
        "max_wait": max_wait,
        "block_when_exhausted": block_when_exhausted,
        "test_on_borrow": test_on_borrow,
        "sentinel_timeout": sentinel_timeout,
        "resolve_timeout": resolve_timeout,
        "poll_interval": poll_interval,
        "listener_retry_base": listener_retry_base,
    }


def _raise_first_error(replies: List[Any]) -> List[Any]:
    for r in replies:
        if isinstance(r, BaseException):
            raise r
    return replies


class SentinelPool:
    """A pool of connections to the current master of ``master_name``, as the sentinels report it.

    Creating it resolves the master (blocking; raises :class:`redis_ferry.ConnectionError` when no sentinel
    answers, :class:`redis_ferry.ConfigError` when none monitors the name, :class:`redis_ferry.AuthError` when
    credentials are refused). The pool knobs are JedisSentinelPool's; times are in seconds. ``db`` is the database
    of every connection (as JedisSentinelPool's ``database``; a ``SELECT`` sent through :meth:`execute_command`
    holds for that command's connection only, which the pool then closes).
    """

    def __init__(
        self,
        sentinels: Sequence[SentinelAddr],
        master_name: str,
        *,
        username: Optional[str] = None,
        password: Optional[str] = None,
        sentinel_username: Optional[str] = None,
        sentinel_password: Optional[str] = None,
        db: int = 0,
        max_total: int = 8,
        max_idle: int = 8,
        min_idle: int = 0,
        max_wait: Optional[float] = None,
        block_when_exhausted: bool = True,
        test_on_borrow: bool = False,
        sentinel_timeout: float = 1.0,
        resolve_timeout: float = 10.0,
        poll_interval: float = 2.0,
        listener_retry_base: float = 5.0,
    ) -> None:
        args = _pool_args(
            sentinels,
            master_name,
            username=username,
            password=password,
            sentinel_username=sentinel_username,
            sentinel_password=sentinel_password,
            db=db,
            max_total=max_total,
            max_idle=max_idle,
            min_idle=min_idle,
            max_wait=max_wait,
            block_when_exhausted=block_when_exhausted,
            test_on_borrow=test_on_borrow,
            sentinel_timeout=sentinel_timeout,
            resolve_timeout=resolve_timeout,
            poll_interval=poll_interval,
            listener_retry_base=listener_retry_base,
        )
        self._pool = _native.SentinelPool.connect(args)

    def execute_command(self, *args: Arg) -> Any:
        """Run one command on the current master and return its reply.

        A command that provably did not run (the master switched before it was sent, or the server answered
        READONLY) is retried once on the new master; other failures raise.
        """
        return self._pool.call(_command(args))

    def pipeline(self, transaction: bool = True) -> "Pipeline":
        """Commands buffered and sent together on one connection; ``transaction`` wraps them in MULTI/EXEC."""
        return Pipeline(self._pool, transaction)

    @property
    def master_addr(self) -> Optional[str]:
        """``host:port`` of the master the pool writes to now."""
        return self._pool.master_addr()

    @property
    def generation(self) -> int:
        """The master generation: one more after each switch."""
        return self._pool.generation()

    def close(self) -> None:
        """Stop following the master and close idle connections; later calls raise :class:`Stopped`."""
        self._pool.close()

    def __enter__(self) -> "SentinelPool":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class Pipeline:
    """Buffered commands for :meth:`SentinelPool.pipeline`; :meth:`execute` sends them."""

    def __init__(self, pool: "_native.SentinelPool", transaction: bool) -> None:
        self._pool = pool
        self._transaction = transaction
        self._commands: List[List[bytes]] = []

    def execute_command(self, *args: Arg) -> "Pipeline":
        """Queue one command; returns the pipeline so calls can be chained."""
        self._commands.append(_command(args))
        return self

    def __len__(self) -> int:
        return len(self._commands)

    def execute(self, raise_on_error: bool = True) -> List[Any]:
        """Send the queued commands and return their replies in order (the queue is emptied).

        With ``raise_on_error`` the first error reply raises; otherwise it stays in the list as an exception.
        """
        commands, self._commands = self._commands, []
        if not commands:
            return []
        replies: List[Any] = self._pool.pipeline(commands, self._transaction)
        return _raise_first_error(replies) if raise_on_error else replies

    def reset(self) -> None:
        """Drop the queued commands."""
        self._commands = []

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.reset()


class AsyncSentinelPool:
    """The asyncio twin of :class:`SentinelPool`: the same options; the master is resolved on first use (or by
    ``await pool.connect()``, or ``async with``)."""

    def __init__(
        self,
        sentinels: Sequence[SentinelAddr],
        master_name: str,
        *,
        username: Optional[str] = None,
        password: Optional[str] = None,
        sentinel_username: Optional[str] = None,
        sentinel_password: Optional[str] = None,
        db: int = 0,
        max_total: int = 8,
        max_idle: int = 8,
        min_idle: int = 0,
        max_wait: Optional[float] = None,
        block_when_exhausted: bool = True,
        test_on_borrow: bool = False,
        sentinel_timeout: float = 1.0,
        resolve_timeout: float = 10.0,
        poll_interval: float = 2.0,
        listener_retry_base: float = 5.0,
    ) -> None:
        self._args = _pool_args(
            sentinels,
            master_name,
            username=username,
            password=password,
            sentinel_username=sentinel_username,
            sentinel_password=sentinel_password,
            db=db,
            max_total=max_total,
            max_idle=max_idle,
            min_idle=min_idle,
            max_wait=max_wait,
            block_when_exhausted=block_when_exhausted,
            test_on_borrow=test_on_borrow,
            sentinel_timeout=sentinel_timeout,
            resolve_timeout=resolve_timeout,
            poll_interval=poll_interval,
            listener_retry_base=listener_retry_base,
        )
        self._pool: Optional[_native.SentinelPool] = None

    async def connect(self) -> "AsyncSentinelPool":
        """Resolve the master now (otherwise the first command does)."""
        if self._pool is None:
            pool = await _native.SentinelPool.connect_async(self._args)
            if self._pool is None:
                self._pool = pool
            else:
                pool.close()
        return self

    async def _native_pool(self) -> "_native.SentinelPool":
        await self.connect()
        assert self._pool is not None
        return self._pool

    async def execute_command(self, *args: Arg) -> Any:
        """Run one command on the current master and return its reply (see :meth:`SentinelPool.execute_command`)."""
        command = _command(args)
        pool = await self._native_pool()
        return await pool.call_async(command)

    def pipeline(self, transaction: bool = True) -> "AsyncPipeline":
        """Commands buffered and sent together on one connection; ``transaction`` wraps them in MULTI/EXEC."""
        return AsyncPipeline(self, transaction)

    @property
    def master_addr(self) -> Optional[str]:
        """``host:port`` of the master the pool writes to now (None before the first use)."""
        return None if self._pool is None else self._pool.master_addr()

    @property
    def generation(self) -> int:
        """The master generation: one more after each switch."""
        return 0 if self._pool is None else self._pool.generation()

    async def close(self) -> None:
        """Stop following the master and close idle connections."""
        if self._pool is not None:
            self._pool.close()

    async def __aenter__(self) -> "AsyncSentinelPool":
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()


class AsyncPipeline:
    """Buffered commands for :meth:`AsyncSentinelPool.pipeline`; ``await execute()`` sends them."""

    def __init__(self, pool: AsyncSentinelPool, transaction: bool) -> None:
        self._pool = pool
        self._transaction = transaction
        self._commands: List[List[bytes]] = []

    def execute_command(self, *args: Arg) -> "AsyncPipeline":
        """Queue one command; returns the pipeline so calls can be chained."""
        self._commands.append(_command(args))
        return self

    def __len__(self) -> int:
        return len(self._commands)

    async def execute(self, raise_on_error: bool = True) -> List[Any]:
        """Send the queued commands and return their replies in order (see :meth:`Pipeline.execute`)."""
        commands, self._commands = self._commands, []
        if not commands:
            return []
        pool = await self._pool._native_pool()
        replies: List[Any] = await pool.pipeline_async(commands, self._transaction)
        return _raise_first_error(replies) if raise_on_error else replies

    def reset(self) -> None:
        """Drop the queued commands."""
        self._commands = []
