"""Frozen dataclasses built without their checks, for values known valid.

A frozen dataclass's generated ``__init__`` sets each field through ``object.__setattr__``, then its
``__post_init__`` checks them all. Values whose every field is already known valid (a token cut by
``str.split()``, a number matched by a bounded regex, a field of another checked value, our own
constants) are built by :func:`trusted`'s constructor instead, which sets the slots directly: the
same objects, several times cheaper. Values from anywhere else go through ``__init__`` and its checks.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import MISSING, fields

__all__ = ["trusted"]

_T = typing.TypeVar("_T")
_new = object.__new__


def trusted(cls: type[_T]) -> Callable[..., _T]:
    """A constructor of the frozen (slotted) dataclass ``cls`` that takes the same keywords as
    ``cls`` (and its non-``__init__`` fields too) and sets them, the defaults for the others, without
    any check: only for fields known valid.

    The function is generated, as ``dataclasses`` generates ``__init__``: one direct slot store per
    field, where a generic loop over the fields would cost twice as much as the checks it skips.
    """
    namespace: dict[str, object] = {"_new": _new, "_cls": cls}
    params, stores = [], []
    for f in fields(cls):  # type: ignore[arg-type]  # a dataclass, by the contract above
        if f.default_factory is not MISSING:
            raise TypeError(f"trusted({cls.__name__}): {f.name} has a default_factory (not supported)")
        namespace[f"_set_{f.name}"] = getattr(cls, f.name).__set__  # the slot's own descriptor
        if f.default is MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        stores.append(f"    _set_{f.name}(obj, {f.name})\n")
    source = f"def make(*, {', '.join(params)}):\n    obj = _new(_cls)\n{''.join(stores)}    return obj\n"
    exec(source, namespace)
    make = typing.cast(Callable[..., _T], namespace["make"])
    make.__doc__ = f"A {cls.__name__} of fields known valid, built without their checks."
    return make
