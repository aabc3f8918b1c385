"""Command-line flags generated from the config dataclasses (`SearchConfig`, `Recipe`, `Selection`):
a setting's name, type, default and help are written once, on its field, as `metadata`:

    target_ms: float = field(default=1.0, metadata={"help": "target latency T in ms"})

Keys: `help` (required for a flag), `flag` (default: --field-name), `aliases`, `default_text` (said
instead of the default value), `append` (repeatable, collected into a tuple). The type comes from the
annotation: int, float (any number), bool (a switch: `--name` when the default is off, `--no-name`
when it is on), else text.
"""

from __future__ import annotations

import argparse
import dataclasses

EXIT_BAD_INPUT = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"nas: error: {message}\n")


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _kind(annotation: str) -> str:
    annotation = str(annotation)
    if annotation.startswith("bool"):
        return "bool"
    if annotation.startswith(("int", "tuple[int")):
        return "int"
    if annotation.startswith("float"):
        return "float"
    return "str"


def add_fields(parser, cls, names: tuple[str, ...], *, title: str | None = None) -> None:
    """Add the flags of `cls`'s fields `names` (in that order) to `parser`, in a group titled `title`."""
    target = parser.add_argument_group(title) if title else parser
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        field = fields[name]
        meta = field.metadata
        flag = meta.get("flag", "--" + name.replace("_", "-"))
        default = field.default if field.default is not dataclasses.MISSING else None
        kind = _kind(field.type)
        if kind == "bool":
            switch = flag if not default else "--no-" + flag[2:]
            target.add_argument(
                switch, dest=name, action="store_false" if default else "store_true", default=None, help=meta["help"]
            )
            continue
        said = meta.get("default_text", None if default in (None, ()) else f"{default:g}" if kind == "float" else str(default))
        help_text = meta["help"] + (f" (default {said})" if said else "")
        kwargs = {"dest": name, "help": help_text, "metavar": flag[2:].upper().replace("-", "_")}
        kwargs["type"] = {"int": int, "float": number, "str": str}[kind]
        if meta.get("append"):
            kwargs["action"] = "append"
        target.add_argument(flag, *meta.get("aliases", ()), **kwargs)


def values_of(args: argparse.Namespace, cls, names: tuple[str, ...] | None = None) -> dict:
    """The given flags of `cls`'s fields (those not given stay out, so the field's default applies)."""
    found = {}
    for field in dataclasses.fields(cls):
        if names is not None and field.name not in names:
            continue
        value = getattr(args, field.name, None)
        if value is not None:
            found[field.name] = tuple(value) if isinstance(value, list) else value
    return found


def words_of(args: argparse.Namespace, cls, names: tuple[str, ...]) -> list[str]:
    """The flags that give these fields again (for the next command a run suggests)."""
    import shlex

    fields = {f.name: f for f in dataclasses.fields(cls)}
    words = []
    for name in names:
        value, meta = getattr(args, name, None), fields[name].metadata
        flag = meta.get("flag", "--" + name.replace("_", "-"))
        if value is True:
            words.append(flag)
        elif isinstance(value, list | tuple):
            for item in value:
                words += [flag, shlex.quote(str(item))]
        elif value is not None and value is not False:
            words += [flag, shlex.quote(str(value))]
    return words
