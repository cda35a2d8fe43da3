"""The `slotssm-hf` command line: `slotssm-hf COMMAND [ARGS]`; `slotssm-hf COMMAND --help` for its arguments."""

import sys

COMMANDS = {
    "convert-official": "convert a checkpoint trained with the official SlotSSM code",
    "convert-convs5": "convert a checkpoint trained with the official ConvS5 code (non-commercial weights)",
    "push": "publish a saved checkpoint on the Hugging Face Hub in one commit, with a model card",
    "train": "train a SlotSSM (`--model convs5`: a ConvS5) with the transformers Trainer (built-in data by default)",
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        listing = "\n".join(f"  {name:<18} {help}" for name, help in COMMANDS.items())
        print(f"usage: slotssm-hf COMMAND [ARGS]\n\ncommands:\n{listing}", file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    command, rest = argv[0], argv[1:]
    if command == "convert-official":
        from .convert_official import main as run
    elif command == "convert-convs5":
        from .convert_convs5 import main as run
    elif command == "push":
        from .hub import main as run
    elif rest[:2] == ["--model", "convs5"]:
        from .train_convs5 import main as run

        rest = rest[2:]
    else:
        from .train import main as run
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
