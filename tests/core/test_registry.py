"""The bottom layer: components by registry name, by `module:Class` path or as a class."""

from __future__ import annotations

import pytest

from ltm.core.registry import resolve


class Thing:
    pass


REGISTRY = {"thing": Thing}


def test_name_path_and_class_resolve_to_the_class():
    assert resolve("thing", REGISTRY, "widget") is Thing
    assert resolve(f"{__name__}:Thing", REGISTRY, "widget") is Thing
    assert resolve(Thing, REGISTRY, "widget") is Thing


@pytest.mark.parametrize("spec, message", [
    ("thign", r"unknown widget 'thign'; choose one of \['thing'\] or give a 'module:Class' path"),
    ("no.such.module:Thing", r"cannot import widget 'no.such.module:Thing': No module named 'no'"),
    (f"{__name__}:Nothing", rf"cannot import widget '{__name__}:Nothing': .*has no attribute 'Nothing'"),
])
def test_unknown_components_are_named_with_the_choices(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve(spec, REGISTRY, "widget")
