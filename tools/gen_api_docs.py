"""Writes docs/api.md, the API reference, from the public docstrings.

    python tools/gen_api_docs.py          # rewrite docs/api.md
    python tools/gen_api_docs.py --check  # exit 1 if docs/api.md is stale
"""
import importlib
import inspect
import pathlib
import re
import sys

MODULES = ("sepconv", "sepconv.nn", "sepconv.train", "sepconv.models")
TARGET = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _signature(obj):
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    # Default values that are functions print with memory addresses; keep the page stable.
    return re.sub(r"<(?:built-in )?(?:function|method) ([\w.]+)[^>]*>", r"\1", text)


def _entry(module_name, name, obj):
    kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "constant"
    heading = f"### `{module_name}.{name}{_signature(obj) if callable(obj) else ''}`"
    doc = inspect.getdoc(obj) if kind != "constant" else f"`{obj!r}`"
    lines = [heading, "", doc or "(no docstring)", ""]
    if inspect.isclass(obj):
        for attr, member in sorted(vars(obj).items()):
            if attr.startswith("_") or not (callable(member) or isinstance(member, property)):
                continue
            target = member.fget if isinstance(member, property) else member
            signature = "" if isinstance(member, property) else _signature(member)
            lines += [f"#### `{name}.{attr}{signature}`", "", inspect.getdoc(target) or "(no docstring)", ""]
    return lines


def render():
    lines = ["# API reference", "",
             "Generated from the docstrings by `python tools/gen_api_docs.py`; do not edit by hand.", ""]
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        lines += [f"## `{module_name}`", "", inspect.getdoc(module) or "", ""]
        for name in sorted(getattr(module, "__all__", [])):
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            lines += _entry(module_name, name, obj)
    return "\n".join(lines).rstrip() + "\n"


def main(argv):
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python tools/gen_api_docs.py")
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
