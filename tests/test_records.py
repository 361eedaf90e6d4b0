"""cpsysd.records: @record behaves as @dataclass(frozen=True) (and @dataclass with frozen=False),
checked side by side against the real thing."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from cpsysd.records import record


@record
class Point:
    """A record."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    note: str | None = field(default=None, compare=False)
    LIMIT: ClassVar[int] = 10


@dataclass(frozen=True)
class DPoint:
    """The same as a dataclass."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    note: str | None = field(default=None, compare=False)
    LIMIT: ClassVar[int] = 10


@record(frozen=False)
class Box:
    """A mutable record with a factory, a non-init field and __post_init__."""

    items: list[int] = field(default_factory=list)
    size: int = field(init=False)
    hidden: str = field(default="h", repr=False)

    def __post_init__(self) -> None:
        self.size = len(self.items)


@dataclass
class DBox:
    items: list[int] = field(default_factory=list)
    size: int = field(init=False)
    hidden: str = field(default="h", repr=False)

    def __post_init__(self) -> None:
        self.size = len(self.items)


def _same(record_obj: object, data_obj: object) -> None:
    assert repr(record_obj).replace("Box", "DBox").replace("Point", "DPoint") == repr(data_obj)
    assert dataclasses.asdict(record_obj) == dataclasses.asdict(data_obj)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, 2), {}), ((1,), {"y": 5}), ((), {"x": 3, "tags": ("a",), "note": "n"})],
)
def test_frozen_record_matches_a_frozen_dataclass(args: tuple[int, ...], kwargs: dict) -> None:
    _same(Point(*args, **kwargs), DPoint(*args, **kwargs))
    assert Point(*args, **kwargs) == Point(*args, **kwargs)
    assert hash(Point(*args, **kwargs)) == hash(Point(*args, **kwargs))


def test_compare_false_fields_do_not_count() -> None:
    assert Point(1, note="a") == Point(1, note="b")
    assert hash(Point(1, note="a")) == hash(Point(1, note="b"))
    assert Point(1) != Point(2)
    assert Point(1) != DPoint(1)
    assert Point(1).__eq__(DPoint(1)) is NotImplemented


def test_nan_compares_as_in_tuples() -> None:
    nan = float("nan")
    assert Point(nan) == Point(nan)  # type: ignore[arg-type]
    assert DPoint(nan) == DPoint(nan)  # type: ignore[arg-type]


def test_frozen() -> None:
    point = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'x'"):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'other'"):
        point.other = 2  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'x'"):
        del point.x  # type: ignore[misc]


def test_dataclass_api() -> None:
    point = Point(1, 2, note="n")
    assert dataclasses.is_dataclass(Point)
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "tags", "note"]
    assert dataclasses.replace(point, y=7) == Point(1, 7)
    assert dataclasses.replace(point, y=7).note == "n"
    assert dataclasses.astuple(point) == (1, 2, (), "n")
    assert Point.__match_args__ == ("x", "y", "tags", "note")  # type: ignore[attr-defined]
    assert Point.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert not Box.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert Point.LIMIT == 10
    assert Point.__init__.__qualname__ == "Point.__init__"
    match point:
        case Point(1, y):
            assert y == 2
        case _:
            pytest.fail("no match")


def test_copy_and_pickle() -> None:
    point = Point(1, 2, ("a",), "n")
    assert copy.copy(point) == point
    assert copy.deepcopy(point) == point
    assert pickle.loads(pickle.dumps(point)) == point


def test_mutable_record_matches_a_dataclass() -> None:
    box, dbox = Box([1, 2]), DBox([1, 2])
    _same(box, dbox)
    assert box.size == 2
    box.items = [3]
    assert box.items == [3]
    assert Box().items is not Box().items  # a fresh list each time
    assert Box.__hash__ is None  # type: ignore[comparison-overlap]
    assert DBox.__hash__ is None  # type: ignore[comparison-overlap]
    assert Box([1]) == Box([1])


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((1, 2, (), None, 5), {}, r"takes 5 positional arguments but 6 were given"),
        ((), {"z": 1}, r"got an unexpected keyword argument 'z'"),
        ((1,), {"x": 1}, r"got multiple values for argument 'x'"),
        ((), {"y": 1}, r"missing 1 required argument\(s\): 'x'"),
    ],
)
def test_bad_arguments_are_type_errors(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_box_refuses_init_false_argument() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'size'"):
        Box(size=3)  # type: ignore[call-arg]


def test_unsupported_shapes_are_refused() -> None:
    with pytest.raises(TypeError, match="follows default argument"):

        @record
        class Bad:
            a: int = 0
            b: int  # type: ignore[misc]

    with pytest.raises(TypeError, match="InitVar and kw_only unsupported"):

        @record
        class Bad2:
            a: dataclasses.InitVar[int]

    with pytest.raises(TypeError, match="cannot inherit"):

        @record
        class Bad3(DPoint):
            z: int = 0

    with pytest.raises(ValueError, match="mutable default"):

        @record
        class Bad4:
            a: list[int] = []  # noqa: RUF012


def test_methods_the_class_defines_stay() -> None:
    @record
    class Custom:
        a: int

        def __repr__(self) -> str:
            return "custom"

        def __hash__(self) -> int:
            return 42

    assert repr(Custom(1)) == "custom"
    assert hash(Custom(1)) == 42
    assert Custom(1) == Custom(1)
