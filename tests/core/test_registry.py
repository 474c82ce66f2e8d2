"""The bottom layer: components by registry name, by `module:Class` path or as a class."""

from __future__ import annotations

import pytest

from ltm.core.errors import ConfigError
from ltm.core.registry import resolve


class Thing:
    pass


REGISTRY = {"thing": Thing}


def test_name_path_and_class_resolve_to_the_class():
    assert resolve("thing", REGISTRY, "widget", Thing) is Thing
    assert resolve(f"{__name__}:Thing", REGISTRY, "widget", Thing) is Thing
    assert resolve(Thing, REGISTRY, "widget", Thing) is Thing


def not_a_class():
    raise AssertionError("resolve called what the path names")


@pytest.mark.parametrize("spec, message", [
    ("os:system", r"widget 'os:system' is a builtin_function_or_method, not a subclass of .*Thing"),
    (f"{__name__}:not_a_class", r"is a function, not a subclass"),
    ("collections:OrderedDict", r"is the class OrderedDict, not a subclass of"),
])
def test_a_path_to_anything_but_a_subclass_is_refused_before_it_is_called(spec, message):
    with pytest.raises(ConfigError, match=message):
        resolve(spec, REGISTRY, "widget", Thing)


@pytest.mark.parametrize("spec, message", [
    ("thign", r"unknown widget 'thign'; choose one of \['thing'\] or give a 'module:Class' path"),
    ("no.such.module:Thing", r"cannot import widget 'no.such.module:Thing': No module named 'no'"),
    (f"{__name__}:Nothing", rf"cannot import widget '{__name__}:Nothing': .*has no attribute 'Nothing'"),
])
def test_unknown_components_are_named_with_the_choices(spec, message):
    with pytest.raises(ConfigError, match=message):
        resolve(spec, REGISTRY, "widget", Thing)
