"""Building the typed results (dataclasses) from the JSON the native module returns, and endpoint specs."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Mapping, Type, TypeVar, Union

from ._native import ConfigError

T = TypeVar("T")

#: A source or target: a ``redis://`` URL (a standalone server) or ferry's tagged form as a dict, e.g.
#: ``{"type": "cluster", "seeds": ["redis://127.0.0.1:7000"]}``.
EndpointSpec = Union[str, Mapping[str, Any]]


def endpoint_spec(spec: EndpointSpec, what: str) -> Dict[str, Any]:
    """A source/target as ferry's serde form: a URL string means a standalone server."""
    if isinstance(spec, str):
        return {"type": "standalone", "url": spec}
    if isinstance(spec, Mapping):
        return dict(spec)
    raise ConfigError(f"{what} must be a redis:// URL or a dict, not {type(spec).__name__}")


def to_json(value: Any, what: str) -> str:
    """JSON for the native module; a value JSON cannot hold is a configuration error, not a TypeError."""
    try:
        return json.dumps(value, default=_default)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} cannot be expressed as JSON: {e}") from None


def _default(o: Any) -> Any:
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def from_dict(cls: Type[T], data: Mapping[str, Any]) -> T:
    """A dataclass from a mapping: known fields by name, anything newer the façade adds goes to ``extra``."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    known = {k: v for k, v in data.items() if k in names and k != "extra"}
    if "extra" in names:
        known["extra"] = {k: v for k, v in data.items() if k not in names}
    return cls(**known)
