"""Command lines generated from a script's config dataclass.

Each field becomes a flag of the same name; fields declared with `option(default, help, choices)`
carry their help text and allowed values into the command line. `--preset FILE.json` loads values first; flags given on the command line win.
The effective config is what the scripts save next to their outputs.
"""

import argparse
import dataclasses
import json
import typing
from pathlib import Path


def option(default, help: str, choices: tuple | None = None):
    """A config field with a help text (and optionally its allowed values) for the command line."""
    metadata = {"help": help} if choices is None else {"help": help, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(annotation):
    """argparse type for a field annotation: int, float, str, bool, or `X | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args else annotation
    if base is bool:
        return _parse_bool
    if base in (int, float, str):
        return base
    raise TypeError(f"unsupported config field type {annotation!r}")


def build_parser(config_class, description: str, positional: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="JSON file of field values, applied before the flags")
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        kwargs = {"type": _converter(hints[field.name]), "default": argparse.SUPPRESS,
                  "help": f"{field.metadata.get('help', '')} (default: {field.default!r})"}
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        if field.name in positional:
            parser.add_argument(field.name, nargs="?", **kwargs)
        else:
            parser.add_argument(f"--{field.name}", **kwargs)
    return parser


def parse_config(config_class, argv: list[str] | None = None, description: str = "",
                 positional: tuple[str, ...] = ()):
    """Build `config_class` from an optional --preset JSON file and then the flags.

    Fields named in `positional` are given as positional arguments instead of flags.
    """
    args = vars(build_parser(config_class, description, positional).parse_args(argv))
    values = {}
    preset = args.pop("preset", None)
    if preset:
        values = load_preset(config_class, preset)
    values.update(args)
    for field in dataclasses.fields(config_class):  # preset values get the same checks as flags
        choices = field.metadata.get("choices")
        if choices and field.name in values and values[field.name] not in choices:
            raise SystemExit(f"{field.name}={values[field.name]!r} is not one of {', '.join(map(str, choices))}")
    return config_class(**values)


def load_preset(config_class, path: str | Path) -> dict:
    """Field values from a JSON preset; unknown keys are an error naming the file and the key."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: cannot read preset: {e}")
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(k for k in values if k not in names and not k.startswith("_"))
    if unknown:
        raise SystemExit(f"{path}: unknown preset keys: {', '.join(unknown)}")
    # Keys starting with "_" are comments (e.g. "_paper": "Table 2, head+tail").
    return {k: v for k, v in values.items() if not k.startswith("_")}
