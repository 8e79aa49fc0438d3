"""redis-ferry: ferry's Redis sync, verification, RDB reader and Sentinel pool, in process.

The public API is the pure-Python layer in this package; ``redis_ferry._native`` is the private extension
module under it. Every error is a :class:`FerryError`; its subclasses name the façade's error kinds.
"""

from __future__ import annotations

import atexit

from . import _native, rdb
from ._native import (
    AuthError,
    ConfigError,
    ConnectionError,
    DataError,
    Fenced,
    FerryError,
    ResponseError,
    SourceRefused,
    Stopped,
    TargetRefused,
)
from .dr import (
    DrEvent,
    DrEvents,
    DrPair,
    DrRun,
    DrRunStatus,
    DrStatus,
    FailoverReport,
    RecoverReport,
    SwitchbackReport,
)
from .sentinel import AsyncPipeline, AsyncSentinelPool, Pipeline, SentinelPool
from .sync import (
    Difference,
    Event,
    Events,
    PolicyKey,
    PolicyStatus,
    ShardStatus,
    Status,
    SyncJob,
    VerifyReport,
    verify,
    verify_async,
)

__version__: str = _native.__version__

# Background completions (asyncio results) must not touch the interpreter once it starts finalizing.
atexit.register(_native._shutdown)

__all__ = [
    "AsyncPipeline",
    "AsyncSentinelPool",
    "AuthError",
    "ConfigError",
    "ConnectionError",
    "DataError",
    "Difference",
    "DrEvent",
    "DrEvents",
    "DrPair",
    "DrRun",
    "DrRunStatus",
    "DrStatus",
    "Event",
    "Events",
    "FailoverReport",
    "Fenced",
    "FerryError",
    "Pipeline",
    "RecoverReport",
    "ResponseError",
    "SentinelPool",
    "PolicyKey",
    "PolicyStatus",
    "ShardStatus",
    "SourceRefused",
    "Status",
    "Stopped",
    "SwitchbackReport",
    "SyncJob",
    "TargetRefused",
    "VerifyReport",
    "rdb",
    "verify",
    "verify_async",
    "__version__",
]
