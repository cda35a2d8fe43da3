"""The `slotssm-hf` command line: `slotssm-hf COMMAND [ARGS]`; `slotssm-hf COMMAND --help` for its arguments."""

import importlib
import sys

# command: (module whose main(argv) runs it, what it does)
COMMANDS = {
    "convert-slotssm": ("conversion.convert_slotssm", "convert a checkpoint trained with the official SlotSSM code"),
    "convert-official": ("conversion.convert_slotssm", "the former name of convert-slotssm"),
    "convert-savi": ("conversion.convert_savi", "convert a checkpoint of the official SAVi / SAVi++ code (Flax), without JAX"),
    "convert-statm": ("conversion.convert_statm", "convert a checkpoint of the official STATM-SAVi code (Flax), without JAX"),
    "convert-convs5": ("conversion.convert_convs5", "convert a checkpoint of the official ConvS5 code (non-commercial weights)"),
    "convert-grootv": ("conversion.convert_grootv", "convert a GrootV checkpoint (.pth) trained with the official GrootVL code"),
    "push": ("hub.push", "publish a saved checkpoint on the Hugging Face Hub in one commit, with a model card"),
    "train": ("training.train", "train a model of the zoo with the transformers Trainer (built-in data by default)"),
    "benchmark": ("training.leaderboard", "train every object-centric family on the same data and compare them in one table"),
    "evaluate": ("evaluation.evaluate", "evaluate a model with its paper's protocol; --update-card files the result"),
    "tfds-export": ("data.export", "copy a TFDS folder (e.g. MOVi from gsutil) to Arrow / Parquet for datasets, without TensorFlow"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        asked = argv[:1] in (["-h"], ["--help"])
        listing = "\n".join(f"  {name:<18} {help}" for name, (_, help) in COMMANDS.items())
        print(f"usage: slotssm-hf COMMAND [ARGS]\n\ncommands:\n{listing}", file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    module, _ = COMMANDS[argv[0]]
    return importlib.import_module(f"{__package__}.{module}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
