"""Command line of the built-in environment.

  python -m steptool_jax.envs generate --out=DIR --tasks=N --seed=S [--mistake-rate=R]
      [--template=toolllama|qwen2|llama3] [--max-steps=10] [--no-tfds]
  python -m steptool_jax.envs build-tokenizer [--out=DIR]   # rebuilds the bundled tokenizer
  python -m steptool_jax.envs build-tables [--out=DIR]      # rebuilds the bundled data tables

`generate` prints a JSON summary (per split: tasks, pass rate, tool recall, mistakes).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from steptool_jax.data.render import TEMPLATES


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m steptool_jax.envs", description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  gen = commands.add_parser("generate", help="expert rollouts -> SFT, step-grained TSV, TFDS")
  gen.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
  gen.add_argument("--tasks", type=int, default=1000, help="number of tasks over all splits")
  gen.add_argument("--seed", type=int, default=0)
  gen.add_argument("--mistake-rate", type=float, default=0.0,
                   help="probability that each expert decision is a mistake, in [0, 1]")
  gen.add_argument("--template", choices=TEMPLATES, default="toolllama")
  gen.add_argument("--max-steps", type=int, default=10, help="actions per episode, Finish included")
  gen.add_argument("--no-tfds", action="store_true", help="skip the TFDS build")
  tok = commands.add_parser("build-tokenizer", help="retrain the built-in tokenizer")
  tok.add_argument("--out", type=pathlib.Path, default=None)
  tables = commands.add_parser("build-tables", help="rebuild the bundled data tables")
  tables.add_argument("--out", type=pathlib.Path, default=None)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.command == "generate":
    from steptool_jax.envs.generate import GenerateConfig, generate  # pylint: disable=import-outside-toplevel
    from steptool_jax.envs.settings import EnvSettings  # pylint: disable=import-outside-toplevel
    flag_names = {"num_tasks": "--tasks", "mistake_rate": "--mistake-rate", "max_steps": "--max-steps"}
    try:
      settings = EnvSettings(num_tasks=args.tasks, seed=args.seed, mistake_rate=args.mistake_rate,
                             max_steps=args.max_steps)
    except ValueError as e:  # a ConfigError naming the field
      field = getattr(e, "field", "")
      print(f"{flag_names.get(field, field)}: {getattr(e, 'message', e)}", file=sys.stderr)
      return 2
    if not args.no_tfds:
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
      tfds.disable_progress_bar()
    config = GenerateConfig(env=settings, template=args.template, build_tfds=not args.no_tfds)
    try:
      summary = generate(args.out, config)
    except ValueError as e:
      print(f"generate: {e}", file=sys.stderr)
      return 2
    print(json.dumps(summary, indent=1))
    return 0
  if args.command == "build-tokenizer":
    from steptool_jax.envs import builtin_tokenizer  # pylint: disable=import-outside-toplevel
    tokenizer = builtin_tokenizer.build_tokenizer(args.out or builtin_tokenizer.TOKENIZER_DIR)
    print(f"wrote a tokenizer of {len(tokenizer)} tokens to {args.out or builtin_tokenizer.TOKENIZER_DIR}")
    return 0
  from steptool_jax.envs import build_tables  # pylint: disable=import-outside-toplevel
  paths = build_tables.write_tables(args.out or build_tables.TABLES_DIR)
  print("wrote " + ", ".join(str(p) for p in paths))
  return 0


if __name__ == "__main__":
  sys.exit(main())
