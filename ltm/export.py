"""Export a trained checkpoint as a Hugging Face folder.

    python -m ltm.export --checkpoint runs/vanilla --out exports/vanilla
    python -c "import transformers; transformers.AutoModelForCausalLM.from_pretrained('exports/vanilla')"

A vanilla decoder becomes a plain LlamaForCausalLM (Qwen2ForCausalLM with attention biases) that
`transformers` runs with no code of ltm's. Every other family's folder keeps its own parts under
ltm names: it loads back into ltm exactly (--init-from-hf DIR, --checkpoint DIR, --init-from DIR,
ltm.models.from_hf), and in `transformers` only as its bare decoder, without its thoughts.
"""

from __future__ import annotations

import sys

from ltm.cli.errors import report_user_errors
from ltm.cli.export_args import build_parser
from ltm.training.hf_export import export_hf


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)

    def run() -> None:
        out = export_hf(args.checkpoint, args.out, args.overwrite, args.trust_code)
        print(f"exported {args.checkpoint} to {out} (config.json, model.safetensors, tokenizer.json, "
              f"tokenizer_config.json, generation_config.json)")

    return report_user_errors(run)


if __name__ == "__main__":
    sys.exit(main())
