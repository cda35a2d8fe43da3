"""The `slotssm-hf` command line."""

import argparse
import sys

from . import convert_official


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="slotssm-hf", description="SlotSSM models for the Hugging Face ecosystem.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert-official",
        help="convert a checkpoint trained with the official SlotSSM code",
        description=convert_official.__doc__.split("\n\n")[0],
    )
    convert_official.add_arguments(convert)
    convert.set_defaults(run=convert_official.run)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
