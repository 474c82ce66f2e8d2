"""Resolve components by registry name or by a `module:Class` path."""

from __future__ import annotations

import importlib


def resolve(spec: str | type, registry: dict[str, type], kind: str) -> type:
    """Return the class named by `spec`: a key of `registry`, a `module:Class` path, or a class.

    Raises:
        ValueError: naming the unknown component and the choices.
    """
    if isinstance(spec, type):
        return spec
    if spec in registry:
        return registry[spec]
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import {kind} '{spec}': {err}. Give 'package.module:Class' "
                             f"on the Python path.") from err
    raise ValueError(f"unknown {kind} '{spec}'; choose one of {sorted(registry)} "
                     f"or give a 'module:Class' path.")
