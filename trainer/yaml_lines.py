"""Read a YAML file (a sweep, a training config) into plain data plus a map from key paths to
line numbers, with one rule for numbers.

PyYAML's `safe_load` forgets where each value came from; error messages need "grid.lr[2] (line 12)".
So we compose the node tree once, construct the data from that same tree and walk it for
positions. PyYAML has no such helper, hence this small module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ConfigError, brief

KeyPath = tuple  # of str (mapping keys) and int (list indices)


# Bounds on what a YAML file may hold (sweep files and training configs alike). A 364-byte
# file of nested aliases ("billion laughs") expands to billions of nodes: the expanded size is
# counted while composing, before anything is constructed or validated.
MAX_FILE_BYTES = 256 << 10  # 256 KiB; real sweep files are a few KB (PyYAML reads ~150 KB/s)
MAX_NODES = 50_000          # nodes after alias expansion (an alias counts as the whole node it repeats)
MAX_DEPTH = 40              # nesting of lists/mappings
# Integers past this are no count, size or seed any file means, and past ~1024 bits they cannot
# even become a float (`search` bounds) or, past 4300 digits, be printed in a message.
MAX_INT_BITS = 256


try:  # libyaml's parser (events in C, ~4x faster); our Python composer on top, to count nodes
    from yaml._yaml import CParser as _Parser

    _PARSER_BASES: tuple = (_Parser,)
except ImportError:  # PyYAML built without libyaml
    _PARSER_BASES = (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser)


class NumberLoader(*_PARSER_BASES, yaml.composer.Composer, yaml.constructor.SafeConstructor,
                   yaml.resolver.Resolver):
    """A safe loader that reads `1e-3` as a number. PyYAML follows YAML 1.1, whose float syntax
    needs a dot (`1.0e-3`), so `lr: 1e-3` would otherwise be the string '1e-3'. YAML 1.1's
    base-60 numbers (`12:30` -> 750) are not read as numbers: they stay text.

    The composer counts nodes as they would be after alias expansion and refuses a file over
    MAX_NODES or nested deeper than MAX_DEPTH, before anything is expanded."""

    def __init__(self, stream):
        if _PARSER_BASES[0] is yaml.reader.Reader:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
        else:
            _PARSER_BASES[0].__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._sizes: dict[int, int] = {}
        self._depth = 0

    def compose_node(self, parent, index):
        start = self.peek_event().start_mark
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested too deeply (more than {MAX_DEPTH} levels)", start)
            node = yaml.composer.Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._sizes:  # not an alias of a node already counted
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = []
            size = 1 + sum(self._sizes.get(id(c), 1) for c in children)
            self._sizes[id(node)] = size
            if size > MAX_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_NODES} keys and values (aliases `*name` "
                    "counted as the values they repeat); a sweep or config file needs far fewer", start)
        return node

    # The C parser has its own (uncounted) composer: use the Python one above.
    get_single_node = yaml.composer.Composer.get_single_node
    compose_document = yaml.composer.Composer.compose_document
    check_node = yaml.composer.Composer.check_node
    get_node = yaml.composer.Composer.get_node


# SafeLoader's number resolvers, re-added below without their base-60 forms.
NumberLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in items
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, items in yaml.SafeLoader.yaml_implicit_resolvers.items()}
NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"""),
    list("-+0123456789"))
NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"""
               r"""|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"""),
    list("-+0123456789."))


# PyYAML's constructors for these scalar tags assume text their resolver matched: given other
# text through an explicit tag (`!!bool maybe`, `!!timestamp 99`, `!!int ''`) they fail with
# KeyError, AttributeError or IndexError. Each is wrapped to say which value is not what.
_SCALAR_KINDS = {"bool": "a boolean (true or false)", "int": "an integer", "float": "a number",
                 "timestamp": "a date or time (2024-01-31, 2024-01-31T12:00:00Z)", "binary": "base64 data"}


def _checked_scalar(name: str, what: str, construct):
    def checked(loader, node):
        if not isinstance(node, yaml.ScalarNode):
            return construct(loader, node)  # PyYAML's own ConstructorError names the node kind
        try:
            value = construct(loader, node)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError):
            raise yaml.constructor.ConstructorError(None, None, _not_a(loader, node, name, what),
                                                    node.start_mark) from None
        if name == "int" and value.bit_length() > MAX_INT_BITS:
            raise yaml.constructor.ConstructorError(None, None, _too_large(int(value.bit_length() * 0.30103) + 1),
                                                    node.start_mark)
        return value
    return checked


def _not_a(loader, node, name: str, what: str) -> str:
    value = brief(node.value)
    if loader.resolve(yaml.ScalarNode, node.value, (True, False)) != node.tag:  # the tag was written
        return f"!!{name} {value}: {value} is not {what}; fix the value or remove the tag"
    if name == "int":  # matched the integer pattern, but Python refuses to read that many digits
        return _too_large(len(node.value))
    return f"{value} is not {what}; quote it to keep it as text"


def _too_large(digits: int) -> str:
    return (f"an integer of about {digits:,} digits; numbers in a sweep or config file have at most "
            f"{MAX_INT_BITS} bits (about {int(MAX_INT_BITS * 0.30103) + 1} digits)")


for _name, _what in _SCALAR_KINDS.items():
    _tag = f"tag:yaml.org,2002:{_name}"
    NumberLoader.add_constructor(_tag, _checked_scalar(_name, _what, yaml.SafeLoader.yaml_constructors[_tag]))


@dataclass
class LoadedYaml:
    source: str                     # the file name used in messages
    data: Any                       # what yaml.safe_load would return
    lines: dict[KeyPath, int] = field(default_factory=dict)  # 1-based line of each key/item

    def line(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def where(self, path: KeyPath) -> str:
        """'grid.lr[2] (line 12)' — the key path as written in the file, with its line."""
        text = format_path(path)
        line = self.line(path)
        return f"{text} (line {line})" if line else text


MAX_KEY_SHOWN = 60  # a 100 KB key is shown shortened in messages


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if len(text) > MAX_KEY_SHOWN:
                text = text[:MAX_KEY_SHOWN - 3] + "..."
            out += ("." if out else "") + text
    return out or "(top level)"


def parse_yaml_value(text: str) -> Any:
    """One value written as YAML (`1e-3`, `[a.txt, b.txt]`); text that is not YAML stays text."""
    try:
        return yaml.load(text, Loader=NumberLoader)
    except yaml.YAMLError:
        return text


def load_yaml_file(path: str, what: str = "file") -> LoadedYaml:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    return load_yaml_text(text, source=path)


def load_yaml_text(text: str, source: str = "<string>") -> LoadedYaml:
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: the file is larger than {MAX_FILE_BYTES // 1024} KiB; a sweep or config file "
                          "needs a few KB — split it into several files")
    loader = None
    try:
        loader = NumberLoader(text)  # the reader rejects unprintable characters here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        raise ConfigError(f"{source}: not valid YAML{_mark(err)}: {_problem(err)}") from None
    except yaml.reader.ReaderError as err:
        raise ConfigError(f"{source}: not valid YAML: {err.reason} (character {err.character!r} "
                          f"at position {err.position})") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from None
    # Scalar tags on text they do not fit raise the MarkedYAMLError above (_checked_scalar); any
    # other failure of a constructor on odd input is still the file's fault, not ours.
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    finally:
        if loader is not None:
            loader.dispose()
    loaded = LoadedYaml(source=source, data=data)
    if node is not None:
        try:
            _walk(node, (), loaded, set())
        except RecursionError:
            raise ConfigError(f"{source}: the YAML is nested too deeply") from None
    return loaded


def _mark(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _problem(err: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (err.context, err.problem) if p]
    return "; ".join(parts) or str(err)


def _walk(node: yaml.Node, path: KeyPath, out: LoadedYaml, seen: set[int]) -> None:
    # An alias repeats a node elsewhere; walk each node once (also guards against alias bombs).
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merge keys
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in keys_seen:
                raise ConfigError(
                    f"{out.source}: {format_path(path + (key,))} (line {line}): duplicate key; "
                    f"it is already set on line {keys_seen[key]} — keep one of them")
            keys_seen[key] = line
            out.lines[path + (key,)] = line
            _walk(value_node, path + (key,), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out.lines[path + (index,)] = item.start_mark.line + 1
            _walk(item, path + (index,), out, seen)
