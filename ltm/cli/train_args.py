"""The flags of `python -m ltm.train`, generated from `TrainConfig`, its components' sections and
the families' option sections.

A shared field `max_steps` is `--max-steps`; option `steps` of the inner loop's section is
`--inner.steps` (alias `--inner-steps`); option `thoughts` of family `ponderlm2` is
`--ponderlm2.thoughts`. Only flags given on the command line are returned (defaults are suppressed),
so that they can override a `--config` file and, on resume, the checkpoint's config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from ltm.cli.docstrings import attribute_docs
from ltm.families import FAMILIES, resolve_family
from ltm.training.config import (
    ALIASES,
    COMPONENTS,
    SHARED_FIELDS,
    TrainConfig,
    load_config_file,
    merge_values,
)
from ltm.training.values import convert, field_default, field_type


def flag_name(*parts: str) -> str:
    """`--inner-steps` for ("inner_steps",), `--ponderlm2.thoughts` for ("ponderlm2", "thoughts")."""
    return "--" + ".".join(p.replace("_", "-") for p in parts)


def _flag_type(cls: type, name: str):
    def parse(text: str):
        try:
            return convert(cls, name, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name
    return parse


def _add_field(group, cls: type, f: dataclasses.Field, dest: str, flag: str, help_text: str,
               default=dataclasses.MISSING) -> None:
    base, optional = field_type(cls, f.name)
    default = field_default(f) if default is dataclasses.MISSING else default
    shown = json.dumps(default) if base is dict else default
    if help_text is not argparse.SUPPRESS:
        help_text = f"{help_text} (default: {'none' if default is None else shown})"
    if base is bool:
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=help_text)
        return
    metavar = {int: "INT", float: "FLOAT", dict: "JSON"}.get(base, "STR")
    group.add_argument(flag, dest=dest, type=_flag_type(cls, f.name), default=argparse.SUPPRESS,
                       metavar=metavar + ("|none" if optional else ""), help=help_text)


def add_config_arguments(parser: argparse.ArgumentParser, families: dict) -> None:
    """One flag per shared `TrainConfig` field, grouped; one group per component's section (and a
    hidden flag per alias); then one group per family's options."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    aliases = {place: alias for alias, place in ALIASES.items()}
    for f in dataclasses.fields(TrainConfig):
        if f.name in COMPONENTS:
            _add_component(parser, f, aliases)
            continue
        section = f.metadata["section"]
        if section is None:
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(section)
        _add_field(groups[section], TrainConfig, f, f.name, flag_name(f.name), f.metadata["help"])
    for name, family in families.items():
        options = dataclasses.fields(family.Options)
        if not options:
            continue
        group = parser.add_argument_group(f"{name} options (used with --model {name})")
        docs = attribute_docs(family.Options)
        for f in options:
            _add_field(group, family.Options, f, f"{name}.{f.name}", flag_name(name, f.name),
                       docs.get(f.name, f"{name} option {f.name}"))
    for alias, place in ALIASES.items():
        section, option = place.split(".")
        cls = COMPONENTS[section]
        f = next(o for o in dataclasses.fields(cls) if o.name == option)
        _add_field(parser, cls, f, place, flag_name(alias), argparse.SUPPRESS)


def _add_component(parser: argparse.ArgumentParser, f: dataclasses.Field, aliases: dict) -> None:
    """The flags `--NAME.OPTION` of a component's section, with the run's defaults."""
    cls, defaults = COMPONENTS[f.name], f.default_factory()
    group = parser.add_argument_group(f"{f.metadata['title']} (--{f.name}.*)")
    docs = attribute_docs(cls)
    for option in dataclasses.fields(cls):
        place = f"{f.name}.{option.name}"
        help_text = docs.get(option.name, f"{f.name} option {option.name}")
        if place in aliases:
            help_text = help_text.rstrip(".") + f"; alias {flag_name(aliases[place])}"
        _add_field(group, cls, option, place, flag_name(f.name, option.name), help_text,
                   default=getattr(defaults, option.name))


def _chosen_model(argv: list[str] | None) -> str:
    """The --model of the command line, else of its --config file, else the default."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.model:
        return known.model
    if known.config:
        try:
            return load_config_file(known.config).get("model", TrainConfig.model)
        except ValueError:  # reported in full when the file is read for real
            pass
    return TrainConfig.model


def build_parser(description: str, argv: list[str] | None = None,
                 prog: str = "python -m ltm.train") -> argparse.ArgumentParser:
    """The training CLI's parser: `--config`, `--print-config`, the shared fields and every family's
    options (with those of a `module:Class` family named by --model)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of field values and family "
                        "sections; flags given on the command line override it")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration as YAML and exit")
    families = dict(FAMILIES)
    try:
        chosen = resolve_family(_chosen_model(argv))
        families.setdefault(chosen.name, chosen)
    except ValueError:  # an unknown family is reported when the config is built
        pass
    add_config_arguments(parser, families)
    return parser


def given_values(args: argparse.Namespace) -> dict:
    """Field values and sections from the `--config` file, overridden by the flags given.

    Defaults are suppressed in the parser, so only flags actually given appear in `args`.
    """
    values = load_config_file(args.config) if args.config else {}
    flags: dict = {}
    for dest, value in vars(args).items():
        if dest in SHARED_FIELDS:
            flags[dest] = value
        elif "." in dest:
            section, option = dest.split(".", 1)
            flags.setdefault(section, {})[option] = value
    return merge_values(values, flags)
