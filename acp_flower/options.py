"""Config options declared next to the component that reads them.

A codec, an exchange or a feature declares its options as a frozen dataclass in its own
file (field = config key, default, attribute docstring; ``__post_init__`` validates with
``check`` / ``check_choice``) and registers it here. ``acp_flower.config`` collects every
declared group into ``ExperimentConfig``, so each option is a flat config key that works
in TOML files, ``--set key=value`` and Flower's ``--run-config``, and the generated
``[tool.flwr.app.config]`` lists it. Adding a component touches its own file only.

A group with a ``kind`` belongs to one selectable component: codec ``acp``'s options act
only when ``codec = "acp"``. Setting one (a value other than its default) while another
component of that kind is selected has no effect, and the config warns about it
(``UnusedOptionWarning``). A group without a kind is always in effect (e.g. the link model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T", bound=type)


class UnusedOptionWarning(UserWarning):
    """An option of a component that the config does not select was set: it has no effect."""


@dataclass(frozen=True)
class OptionGroup:
    """The options of one component (or of an always-on feature)."""

    cls: type
    """Frozen dataclass: one field per config key, validated in ``__post_init__``."""
    kind: str = ""
    """Config key that selects the component ("codec", "exchange"); "" = always in effect."""
    name: str = ""
    """Value of ``kind`` that selects it ("acp"); for a feature, its name ("link")."""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.cls))

    def label(self) -> str:
        return f"{self.kind} {self.name!r}" if self.kind else self.name


_GROUPS: list[OptionGroup] = []


def declare_options(cls: type, *, kind: str = "", name: str = "") -> OptionGroup:
    """Register the options dataclass ``cls`` of component ``kind = name`` (or of feature ``name``).

    A key that another group already declares raises, naming both.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"options of {kind} {name!r} must be a dataclass, got {cls!r}")
    group = OptionGroup(cls, kind, name)
    taken = {key: other for other in _GROUPS for key in other.keys}
    for key in group.keys:
        if key in taken:
            raise ValueError(f"config key {key!r} of {group.label()} is already declared by {taken[key].label()}")
    _GROUPS.append(group)
    return group


def option_groups() -> tuple[OptionGroup, ...]:
    """Every declared group, in declaration order."""
    return tuple(_GROUPS)


class Registry(Generic[T]):
    """Classes of one component kind by name (the values of config key ``kind``), as torchvision's
    ``register_model``: a duplicate name raises, lookups name the allowed values."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, T] = {}

    def register(self, name: str, *, options: type | None = None) -> Callable[[T], T]:
        """Class decorator adding a component under ``name``, with the dataclass of its options."""

        def wrap(cls: T) -> T:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._classes[name].__name__})")
            if options is not None:
                declare_options(options, kind=self.kind, name=name)
            cls.name = name
            self._classes[name] = cls
            return cls

        return wrap

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._classes)

    def get(self, name: str) -> T:
        """The class registered under ``name``."""
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(f"config key {self.kind!r}: unknown value {name!r}; "
                             f"allowed: {', '.join(self.names())}") from None


class ComponentConfig(Protocol):
    """What a component builder needs of a config: the selected name and its options."""

    def options(self, kind: str) -> Any: ...


def check(name: str, ok: bool, allowed: str) -> None:
    """Raise ``ValueError`` naming config key ``name`` and what it allows unless ``ok``."""
    if not ok:
        raise ValueError(f"config key {name!r}: invalid value; expected {allowed}")


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    """Raise ``ValueError`` naming config key ``name`` and its allowed values unless ``value`` is one."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"config key {name!r}: unknown value {value!r}; allowed: {', '.join(allowed)}")
