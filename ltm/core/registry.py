"""Resolve components by registry name or by a `module:Class` path."""

from __future__ import annotations

import importlib

from ltm.core.errors import ConfigError


def resolve(spec: str | type, registry: dict[str, type], kind: str, base: type) -> type:
    """Return the class named by `spec`: a key of `registry`, a `module:Class` path, or a class.

    A `module:Class` path is imported, and what it names is checked to be a subclass of `base`
    before anything else touches it: nothing it names is ever called here.

    Raises:
        ConfigError: naming the unknown component and the choices, or what `spec` is instead of
            a `base` subclass.
    """
    if isinstance(spec, str) and spec in registry:
        return registry[spec]
    cls = spec
    if isinstance(spec, str):
        if ":" not in spec:
            raise ConfigError(f"unknown {kind} '{spec}'; choose one of {sorted(registry)} "
                              f"or give a 'module:Class' path.")
        module_name, _, attr = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"cannot import {kind} '{spec}': {err}. Give 'package.module:Class' "
                              f"on the Python path.") from err
    if not (isinstance(cls, type) and issubclass(cls, base)):
        what = f"the class {cls.__name__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise ConfigError(f"{kind} '{spec}' is {what}, not a subclass of {base.__module__}."
                          f"{base.__qualname__}; name a subclass of it.")
    return cls
