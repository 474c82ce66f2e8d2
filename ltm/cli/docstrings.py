"""Field descriptions read from Google-style docstrings, for the tools' `--help`."""

from __future__ import annotations

import inspect
import re


def attribute_docs(cls: type) -> dict[str, str]:
    """Field descriptions from the "Attributes:" section of a Google-style class docstring."""
    docs, current, inside = {}, None, False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip() == "Attributes:":
            inside = True
        elif inside and (m := re.match(r"^    (\w+): (.*)$", line)):
            current, docs[m.group(1)] = m.group(1), m.group(2)
        elif inside and current and line.startswith("        "):
            docs[current] += " " + line.strip()
        elif inside and line.strip():
            break
    return docs
