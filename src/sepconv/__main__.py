"""Command line: python -m sepconv {demo,bench} [options]."""
import argparse
import importlib
import sys

_COMMANDS = {
    "demo": ("sepconv._src.demo", "train a separable network on scikit-learn's digits"),
    "bench": ("sepconv._src.bench", "benchmark the separable layer against its peers"),
}


def main(argv=None):
    """Dispatches to a subcommand's ``main(argv)``; returns its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m sepconv", description=__doc__)
    parser.add_argument("command", choices=sorted(_COMMANDS),
                        help="; ".join(f"{name}: {text}" for name, (_, text) in sorted(_COMMANDS.items())))
    args, rest = parser.parse_known_args(argv[:1])
    module = importlib.import_module(_COMMANDS[args.command][0])
    return module.main(argv[1:] + rest)


if __name__ == "__main__":
    sys.exit(main())
