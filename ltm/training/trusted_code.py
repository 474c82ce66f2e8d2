"""Code a saved config names: the `module:Class` paths of its model, prior and guide.

Loading a checkpoint builds what its config.json names. A registry name (`gaussian`, `ltm`) is
ltm's own code; a `module:Class` path would be imported, so a shared checkpoint could run any code
on the machine that loads it. Such a path is refused unless the person loading it trusts it:
`--trust-code` (Python: `trust_code=True`), after Hugging Face's `trust_remote_code`; or the same
path given by the user elsewhere (on the command line at resume, in a comparison's YAML).

    refuse_untrusted_code(json.loads(text), "runs/x/step_000100/config.json", trust_code=False)
"""

from __future__ import annotations

from collections.abc import Collection

from ltm.core.errors import UntrustedCodeError
from ltm.families import FAMILIES
from ltm.inference import GUIDES
from ltm.priors import PRIORS

CODE_FIELDS = {"model": FAMILIES, "prior": PRIORS, "guide": GUIDES}


def named_code(values: dict) -> dict[str, str]:
    """{field: path} of the model, prior and guide that `values` gives as `module:Class` paths."""
    return {name: spec for name, registry in CODE_FIELDS.items()
            if isinstance(spec := values.get(name), str) and spec not in registry and ":" in spec}


def refuse_untrusted_code(values: dict, source: str, trust_code: bool | Collection[str]) -> None:
    """Refuse a saved config that names code the user did not choose, before anything is imported.

    Args:
        values: The saved config's fields (config.json as read).
        source: The file, for the message.
        trust_code: True trusts every path; a collection trusts the paths in it (those the user
            named); False trusts none.

    Raises:
        UntrustedCodeError: naming the field, the path and the flag that allows it.
    """
    if trust_code is True:
        return
    trusted = set(trust_code or ())
    for name, spec in named_code(values).items():
        if spec not in trusted:
            raise UntrustedCodeError(
                f"{source} names code for its {name}, '{spec}', which loading would import and run; "
                f"pass --trust-code (Python: trust_code=True) only if you trust where this "
                f"checkpoint came from.")
