"""Dataclasses without per-class code generation, for the modules ``cpsysd serve`` imports.

:func:`dataclasses.dataclass` writes ``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` and, when
frozen, ``__setattr__``/``__delattr__`` as source text and compiles each with ``exec()`` while the
class is created: about 0.1 ms per method, 3-4 ms for the app description's classes alone, paid
at every start of every socket-activated service (cold start is the first request's latency).

:func:`record` makes the same classes from methods written once, here, that read a table of the
class's fields: still real dataclasses (``dataclasses.fields``, ``replace``, ``asdict``,
``is_dataclass`` and ``match`` work, ``__dataclass_params__`` tells the truth), typed as
dataclasses by mypy (:func:`typing.dataclass_transform`), with the same ``__init__`` (positional
or keyword, defaults, ``field(default_factory=, init=False)``, ``__post_init__``), ``__repr__``,
``__eq__``/``__hash__`` over the ``compare``/``hash`` fields and, by default, frozen
(:class:`dataclasses.FrozenInstanceError`). Not supported, refused when the class is created:
``InitVar``, ``KW_ONLY``/``kw_only``, and records inheriting from dataclasses. One visible
difference: :func:`inspect.signature` of a record shows ``(*args, **kwargs)``.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

_C = TypeVar("_C", bound=type)
_MISSING: Any = dataclasses.MISSING


@overload
def record(cls: _C, /) -> _C: ...


@overload
def record(*, frozen: bool = True) -> Callable[[_C], _C]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def record(cls: _C | None = None, /, *, frozen: bool = True) -> _C | Callable[[_C], _C]:
    """``@record`` is ``@dataclass(frozen=True)``; ``@record(frozen=False)`` is ``@dataclass``."""
    if cls is None:
        return lambda cls: _make_record(cls, frozen)
    made: _C = _make_record(cls, frozen)
    return made


def _make_record(cls: Any, frozen: bool) -> Any:
    if any(dataclasses.is_dataclass(base) for base in cls.__mro__[1:]):
        raise TypeError(f"{cls.__qualname__}: a record cannot inherit from a dataclass")
    if frozen and ("__setattr__" in cls.__dict__ or "__delattr__" in cls.__dict__):
        raise TypeError(f"{cls.__qualname__}: a frozen record cannot define __setattr__")
    # dataclass's rule: a __hash__ of the class body counts, the None that __eq__ implies does not
    class_hash = cls.__dict__.get("__hash__", _MISSING)
    implied = class_hash is None and "__eq__" in cls.__dict__
    explicit_hash = class_hash is not _MISSING and not implied
    # The field table, ClassVar handling and the checks of field() values; no methods.
    dataclasses.dataclass(cls, init=False, repr=False, eq=False)
    fields = dataclasses.fields(cls)
    for item in cls.__dataclass_fields__.values():
        annotation = item.type if isinstance(item.type, str) else repr(item.type)
        if "InitVar" in annotation or item.kw_only is True:
            raise TypeError(f"{cls.__qualname__}.{item.name}: InitVar and kw_only unsupported")
    params = cls.__dataclass_params__
    params.init = params.repr = params.eq = True
    params.frozen = frozen
    methods: dict[str, Any] = {
        "__init__": _init_method(cls, fields, frozen),
        "__repr__": _repr_method([f.name for f in fields if f.repr]),
        "__eq__": _eq_method([f.name for f in fields if f.compare]),
    }
    for name, method in methods.items():
        if name not in cls.__dict__:  # like dataclass: a method the class defines stays
            method.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, method)
    if not explicit_hash:
        hashed = [f.name for f in fields if (f.compare if f.hash is None else f.hash)]
        cls.__hash__ = _hash_method(hashed) if frozen else None
    if frozen:
        cls.__setattr__, cls.__delattr__ = _frozen_methods(cls, {f.name for f in fields})
    return cls


def _init_method(cls: type, fields: tuple[dataclasses.Field[Any], ...], frozen: bool) -> Any:
    qualname = cls.__qualname__
    positional = [f.name for f in fields if f.init]
    accepted = set(positional)
    required: list[str] = []
    for f in fields:
        if not f.init:
            continue
        if f.default is _MISSING and f.default_factory is _MISSING:
            if len(required) != positional.index(f.name):
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            required.append(f.name)
    plan: list[tuple[str, bool, Any, Any]] = [
        (f.name, f.init, f.default, f.default_factory) for f in fields
    ]
    post_init = hasattr(cls, "__post_init__")
    store = object.__setattr__ if frozen else setattr

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(positional):
            raise TypeError(
                f"{qualname}.__init__() takes {len(positional) + 1} positional arguments "
                f"but {len(args) + 1} were given"
            )
        given = dict(zip(positional, args, strict=False))
        for key, value in kwargs.items():
            if key not in accepted:
                raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {key!r}")
            if key in given:
                raise TypeError(f"{qualname}.__init__() got multiple values for argument {key!r}")
            given[key] = value
        missing = [name for name in required if name not in given]
        if missing:
            raise TypeError(
                f"{qualname}.__init__() missing {len(missing)} required argument(s): "
                + ", ".join(map(repr, missing))
            )
        for name, init, default, factory in plan:
            if init and name in given:
                store(self, name, given[name])
            elif default is not _MISSING:
                store(self, name, default)
            elif factory is not _MISSING:
                store(self, name, factory())
            # else: an init=False field without a default, for __post_init__ to set
        if post_init:
            self.__post_init__()

    return __init__


def _repr_method(names: list[str]) -> Any:
    @reprlib.recursive_repr()
    def __repr__(self: Any) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({shown})"

    return __repr__


def _eq_method(names: list[str]) -> Any:
    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is self.__class__:  # tuples, as dataclass compares (identity first)
            mine = tuple(getattr(self, name) for name in names)
            return mine == tuple(getattr(other, name) for name in names)
        return NotImplemented

    return __eq__


def _hash_method(names: list[str]) -> Any:
    def __hash__(self: Any) -> int:
        return hash(tuple(getattr(self, name) for name in names))

    return __hash__


def _frozen_methods(cls: Any, names: set[str]) -> tuple[Any, Any]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return __setattr__, __delattr__
