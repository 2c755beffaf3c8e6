"""The one way a multimodal tuner enters peft: `register_multimodal_tuner`.

`peft.utils.register_peft_method` only accepts names already in peft's closed `PeftType` enum, so a multimodal
tuner's type is a `MultimodalPeftType`: a `str` whose value is its name, with the ``.value``/``.name`` that peft
and transformers read off an enum member. It hashes and compares equal to the plain string read back from
``adapter_config.json``, so once a tuner package is imported (its ``__init__`` registers it) peft's mapping look-ups
resolve that string and `PeftModel.from_pretrained` loads the folder. Unlike an enum, a type is added at run time:
a third tuner registers itself without any change here.

This module imports no tuner package; each package calls `register_multimodal_tuner` for itself.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import PeftType


class MultimodalPeftType(str):
    """The peft type of a registered multimodal tuner, e.g. ``MultimodalPeftType("MMLORA")``.

    A plain string to peft's mappings and to JSON; ``.value`` and ``.name`` are the string itself, as for a member
    of peft's `PeftType`. Registered types are also attributes of the class (``MultimodalPeftType.MMLORA``).
    """

    __slots__ = ()

    @property
    def value(self) -> str:
        return str.__str__(self)

    @property
    def name(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__str__(self)!r})"


# peft type -> (config class, tuner class), in registration order.
_REGISTRY: dict[str, tuple[type[PeftConfig], type[BaseTuner]]] = {}


def _check_new_type(name: str, config_cls: type, tuner_cls: type) -> None:
    """ValueError unless ``name`` may name a new multimodal tuner built from these classes."""
    if not name.isidentifier() or name != name.upper():
        raise ValueError(f"peft_type={name!r} must be an upper-case identifier such as 'MMLORA'")
    if name in PeftType.__members__:
        raise ValueError(f"peft_type={name!r} is one of peft's own methods; choose another name")
    if not (isinstance(config_cls, type) and issubclass(config_cls, PeftConfig)):
        raise ValueError(f"{name}: config_cls={config_cls!r} is not a peft PeftConfig subclass")
    if not (isinstance(tuner_cls, type) and issubclass(tuner_cls, BaseTuner)):
        raise ValueError(f"{name}: tuner_cls={tuner_cls!r} is not a peft BaseTuner subclass")
    # transformers' adapter integration finds a tuner's weights by peft_type.lower() + "_".
    prefix = getattr(tuner_cls, "prefix", None)
    if prefix != name.lower() + "_":
        raise ValueError(f"{tuner_cls.__name__}.prefix={prefix!r} must be {name.lower() + '_'!r} for peft_type {name}")
    known = _REGISTRY.get(name)
    if known is not None and [_qualified(c) for c in known] != [_qualified(config_cls), _qualified(tuner_cls)]:
        raise ValueError(f"peft_type {name} is already registered by {_qualified(known[0])}")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_multimodal_tuner(peft_type: str, config_cls: type[PeftConfig], tuner_cls: type[BaseTuner]) -> Any:
    """Enter a multimodal tuner into peft's type mappings; returns its `MultimodalPeftType`.

    Called by each tuner package's ``__init__`` for itself. Registering the same classes again (a reloaded module)
    replaces the entry; another tuner under a registered name is refused.

    Raises:
        ValueError: ``peft_type`` is no upper-case identifier or is one of peft's own methods, a class is of the
            wrong kind, ``tuner_cls.prefix`` is not ``peft_type.lower() + "_"``, or the name is taken.
    """
    from peft import mapping

    _check_new_type(peft_type, config_cls, tuner_cls)
    member = MultimodalPeftType(peft_type)
    _REGISTRY[peft_type] = (config_cls, tuner_cls)
    # Drop an earlier key first: a dict keeps its first key object, and the mappings should hold the new member.
    _insert(mapping.PEFT_TYPE_TO_CONFIG_MAPPING, member, config_cls)
    _insert(mapping.PEFT_TYPE_TO_TUNER_MAPPING, member, tuner_cls)
    _insert(mapping.PEFT_TYPE_TO_PREFIX_MAPPING, member, peft_type.lower() + "_")
    setattr(MultimodalPeftType, peft_type, member)
    return member


def _insert(table: dict[Any, Any], member: MultimodalPeftType, value: object) -> None:
    table.pop(member, None)
    table[member] = value


def registered_peft_types() -> list[str]:
    """The peft types of the registered multimodal tuners, in registration order."""
    return list(_REGISTRY)


def is_multimodal_peft_type(peft_type: object) -> TypeGuard[str]:
    """Whether ``peft_type`` (a string read from ``adapter_config.json``, or a type) names a registered tuner."""
    return isinstance(peft_type, str) and peft_type in _REGISTRY


def multimodal_config_class(peft_type: str) -> type[PeftConfig]:
    """The config class registered for ``peft_type``; KeyError naming the registered types otherwise."""
    if peft_type not in _REGISTRY:
        raise KeyError(f"{peft_type!r} is not a registered multimodal tuner ({'/'.join(_REGISTRY) or 'none'})")
    return _REGISTRY[peft_type][0]


def peft_type_of(config_cls: type) -> MultimodalPeftType:
    """The registered type of a config class (or of the nearest registered class it derives from).

    Raises:
        ValueError: no class in ``config_cls``'s hierarchy was registered.
    """
    for cls in config_cls.__mro__:
        for name, (registered, _) in _REGISTRY.items():
            if registered is cls:
                return MultimodalPeftType(name)
    raise ValueError(
        f"{config_cls.__name__} is not a registered multimodal tuner config; call "
        "mfpeft.tuners.register_multimodal_tuner(peft_type, config_cls, tuner_cls) when its package is imported"
    )
