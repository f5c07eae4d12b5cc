"""Command lines generated from a script's config dataclass, and how the scripts report errors.

Each field becomes a flag of the same name; fields declared with `option(default, help, choices)`
carry their help text and allowed values into the command line. A field whose type is a dataclass
is an option group: its fields are flags of the same config (flat names, each used once).
`--preset FILE.json` loads values first; flags given on the command line win. Preset values go
through the same conversions and checks as flags. The effective config is what the scripts save next to their outputs.

This is the one library module that parses command lines; the scripts call `run_script`, which
prints bad input (a MinibertError) as one line, `error: ...`, and exits with status 2; `--debug`
shows the traceback instead.
"""

import argparse
import dataclasses
import json
import signal
import sys
import traceback
import typing
from pathlib import Path

from minibert.errors import ConfigError, MinibertError
from minibert.files import read_json_object
from minibert.output_paths import check_not_input, resolve


def stopped_exit_status(number: int) -> int:
    """The exit status of a run a signal stopped after saving last/: 128 + its number (143 for SIGTERM,
    130 for SIGINT), what a shell reports for a process that signal ended, so a scheduler or script
    sees the run is unfinished (--resume continues it)."""
    return 128 + number


def option(default, help: str, choices: tuple | None = None):
    """A config field with a help text (and optionally its allowed values) for the command line."""
    metadata = {"help": help} if choices is None else {"help": help, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


def at_least(low):
    """A RULES test: the value is at least `low`."""
    return lambda value: value >= low


def finite_at_least(low):
    """A RULES test: the value is a finite number, at least `low`."""
    return lambda value: low <= value < float("inf")


def check_rules(values: dict, rules: dict) -> None:
    """The first option of `values` ({option: value}) that fails its rule, as a ConfigError
    `--option value: must be REQUIREMENT`. rules: {option: (test, requirement)}; a test must fail
    for NaN (written as comparisons, it does)."""
    for name, (ok, requirement) in rules.items():
        if not ok(values[name]):
            raise ConfigError(f"--{name} {values[name]}: must be {requirement}")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse_bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _base_type(annotation):
    """int, float, str or bool for a field annotation (`X | None` -> X)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args else annotation
    if base not in (int, float, str, bool):
        raise TypeError(f"unsupported config field type {annotation!r}")
    return base


def _converter(annotation):
    """argparse type for a field annotation."""
    base = _base_type(annotation)
    return _parse_bool if base is bool else base


def convert_value(annotation, value, where: str):
    """A preset's JSON value as the field's type, as a flag would give it; ConfigError otherwise.

    Strings are parsed as on the command line ("false" is False, "1" is 1); JSON numbers and
    booleans are taken where they fit (an integer for a text field such as `layers` becomes "4");
    lists, objects and null are refused, as no flag can give them.
    """
    base = _base_type(annotation)
    try:
        if isinstance(value, str):
            return _converter(annotation)(value)
        if base is bool and isinstance(value, bool):
            return value
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is str and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise ConfigError(f"{where}: {e}") from None
    raise ConfigError(f"{where}: expected {base.__name__}, got {json.dumps(value)}")


def flat_fields(config_class) -> list[tuple[dataclasses.Field, object]]:
    """(field, type) of every option of `config_class`, with option groups opened.

    A field whose type is itself a dataclass is an option group: its fields are options of the same
    config, named without the group (`--learning_rate`, not `--optim.learning_rate`), so a name may
    appear only once in the whole config.
    """
    options, hints = [], typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[field.name]):
            options += flat_fields(hints[field.name])
        else:
            options.append((field, hints[field.name]))
    names = [field.name for field, _ in options]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TypeError(f"{config_class.__name__}: options named twice: {', '.join(repeated)}")
    return options


def from_flat(config_class, values: dict, where: str):
    """`config_class` (option groups included) from {option: value}; defaults fill what is missing.
    An unknown option is a ConfigError naming `where` and the option, before anything runs."""
    known = {field.name for field, _ in flat_fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    return _build(config_class(), values)


def _build(default, values: dict):
    """`default` with the options of `values` replaced, group by group. A group's defaults are those
    of the config's default instance, so a config may give a group other defaults than the group's
    class (pre-training's machine options default to padded batches)."""
    kwargs = {}
    for field in dataclasses.fields(default):
        value = getattr(default, field.name)
        if dataclasses.is_dataclass(value):
            kwargs[field.name] = _build(value, values)
        elif field.name in values:
            kwargs[field.name] = values[field.name]
    return dataclasses.replace(default, **kwargs)


class FlatOptions:
    """A run's config as flat {option: value}, option groups opened: what flags, presets and
    config.json hold (a base class of the configs made of groups)."""

    @classmethod
    def of(cls, where: str = "", **values):
        """The config from flat {option: value}; an unknown option is a ConfigError naming `where`."""
        return from_flat(cls, values, where or cls.__name__)

    def flat(self) -> dict:
        """{option: value}: what config.json and presets hold."""
        return to_flat(self)


def to_flat(config) -> dict:
    """{option: value} of a config, option groups opened (what config.json and presets hold)."""
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        values.update(to_flat(value) if dataclasses.is_dataclass(value) else {field.name: value})
    return values


def build_parser(config_class, description: str, positional: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    # allow_abbrev=False: argparse would otherwise take `--epoch 3` as `--epochs 3` silently.
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", action="append",
                        help="JSON file of field values, applied before the flags (one: a second is refused)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    defaults = to_flat(config_class())  # a group's defaults may be the config's own (see _build)
    for field, hint in flat_fields(config_class):
        kwargs = {"type": _converter(hint), "default": argparse.SUPPRESS,
                  "help": f"{field.metadata.get('help', '')} (default: {defaults[field.name]!r})"}
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        if field.name in positional:
            # No argparse choices: an omitted positional's SUPPRESS default would be refused as a
            # choice; parse_config_and_preset checks the value against the field's choices instead.
            kwargs.pop("choices", None)
            parser.add_argument(field.name, nargs="?", **kwargs)
        else:
            parser.add_argument(f"--{field.name}", **kwargs)
    return parser


def parse_config(config_class, argv: list[str] | None = None, description: str = "",
                 positional: tuple[str, ...] = ()):
    """Build `config_class` from an optional --preset JSON file and then the flags.

    Fields named in `positional` are given as positional arguments instead of flags.
    """
    return parse_config_and_preset(config_class, argv, description, positional)[0]


def parse_config_and_preset(config_class, argv: list[str] | None, description: str,
                            positional: tuple[str, ...]) -> tuple[object, str | None]:
    """parse_config's config and the --preset file it read (None without one)."""
    args = vars(build_parser(config_class, description, positional).parse_args(argv))
    args.pop("debug", None)
    values = {}
    presets = args.pop("preset", None) or []
    if len(presets) > 1:  # which would win is a guess: refused rather than merged or replaced
        raise ConfigError(f"--preset given {len(presets)} times ({', '.join(presets)}): give one, or merge "
                          "them into one file")
    preset = presets[0] if presets else None
    if preset:
        values = load_preset(config_class, preset)
    values.update(args)
    check_choices(config_class, values, preset, flags=set(args))  # preset values get the same checks as flags
    return from_flat(config_class, values, "--preset"), preset


def check_choices(config_class, values: dict, preset: str | None, flags: set = frozenset()) -> None:
    """A value of `values` ({option: value}) outside its option's choices, as a ConfigError naming
    the preset file and key, or the flag (the options in `flags` came from the command line)."""
    for field, _ in flat_fields(config_class):
        choices = field.metadata.get("choices")
        if choices and field.name in values and values[field.name] not in choices:
            where = f"{preset}: {field.name}" if field.name not in flags else field.name.upper()
            raise ConfigError(f"{where}={values[field.name]!r} is not one of "
                              f"{', '.join(map(str, filter(None, choices)))}")


def check_outputs_not_preset(config, output_files: tuple[str, ...], preset: str | None) -> None:
    """Refuse an output file option (comma-separated names included) that is the --preset file read."""
    values = to_flat(config)
    for name in output_files if preset else ():
        value = values.get(name)
        for path in (p.strip() for p in value.split(",")) if isinstance(value, str) and value != "-" else ():
            if path:
                check_not_input(resolve(path, f"--{name}"), f"--{name}", [("--preset", preset)])


def load_preset(config_class, path: str | Path) -> dict:
    """Field values from a JSON preset, converted like flags; unknown or repeated keys and values
    that no flag could give are errors naming the file and the key. Keys starting with "_" are
    comments."""
    values = read_json_object(path, "preset", ConfigError)
    hints = {field.name: hint for field, hint in flat_fields(config_class)}
    unknown = sorted(k for k in values if k not in hints and not k.startswith("_"))
    if unknown:
        raise ConfigError(f"{path}: unknown preset keys: {', '.join(unknown)}")
    return {k: convert_value(hints[k], v, f"{path}: {k}") for k, v in values.items() if not k.startswith("_")}


def run_script(main, config_class, argv: list[str] | None, description: str, positional: tuple[str, ...] = (),
               output_files: tuple[str, ...] = ()):
    """Parse the command line into config_class and call main(config).

    `output_files` names the options that give a file the script writes: none may be the --preset
    file (main checks them against everything else it reads).

    Bad input (a MinibertError: a file:line, tensor, key or option and what is wrong) is printed as
    one line `error: ...` with exit status 2; `--debug` re-raises it with its traceback. Anything
    else is a bug and keeps its traceback. A run that a signal stopped (main returned a dict with
    "stopped": True and "signal", after saving last/) exits with status 128 + the signal's number, as a
    process that signal ended (143 for SIGTERM, 130 for Ctrl-C). A Ctrl-C outside a training loop
    (reading, tokenizing) ends the script with one line and status 130, never a traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        config, preset = parse_config_and_preset(config_class, argv, description, positional)
        check_outputs_not_preset(config, output_files, preset)
        result = main(config)
    except MinibertError as e:
        if debug:
            traceback.print_exc()
        message = str(e).replace("\n", "\n  ")  # a list of names stays one message, indented
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted (Ctrl-C)", file=sys.stderr)
        raise SystemExit(stopped_exit_status(signal.SIGINT)) from None
    if isinstance(result, dict) and result.get("stopped"):
        raise SystemExit(stopped_exit_status(result.get("signal", signal.SIGTERM)))
    return result


def run_subcommands(commands: dict, argv: list[str] | None, description: str, default: str,
                    output_files: tuple[str, ...] = ()):
    """run_script for a script with subcommands: `commands` maps a name to (main, config class, help).

    The first argument names the subcommand; without one (no arguments, or a flag first) the
    `default` subcommand runs. `-h` first lists the subcommands; `SUBCOMMAND --help` their options.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        width = max(map(len, commands))
        lines = [f"  {name:<{width}}  {text}" for name, (_, _, text) in commands.items()]
        print(f"{description}\nsubcommands (each has --help):\n" + "\n".join(lines))
        raise SystemExit(0)
    name = argv[0] if argv and not argv[0].startswith("-") else default
    if name not in commands:
        raise SystemExit(f"unknown subcommand {name!r}; choose one of {', '.join(commands)}")
    main, config_class, text = commands[name]
    return run_script(main, config_class, argv[1:] if argv and argv[0] == name else argv, f"{name}: {text}",
                      output_files=output_files)
