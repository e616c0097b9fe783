"""Reading a grid file's YAML without trusting it: bounded, strict, one-line errors.

    data = read_yaml(Path("grids/paper.yaml"))   # a dict, or GridError

A grid file is a few kilobytes typed by hand, so anything far from that is a mistake or an
attack, and is refused before it can hang or crash the reader: a file over MAX_BYTES, text that
is not UTF-8, lists and mappings nested deeper than MAX_DEPTH, and more than MAX_VALUES values
once aliases are expanded (a "billion laughs" file is a few lines whose aliases multiply). A key
given twice in one mapping is an error too: YAML loaders keep the second silently.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from orchestrator.errors import GridError

MAX_BYTES = 1 << 20
MAX_DEPTH = 20
MAX_VALUES = 100_000

try:  # libyaml's parser: the pure-Python one takes seconds on a 1 MiB file
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    class _Parser(Reader, Scanner, Parser):
        def __init__(self, text):
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)


class Refused(yaml.MarkedYAMLError):
    """YAML that parses, but that no grid file should be."""


# Composition stays in Python (Composer before the parser in the bases) so that it can be bounded.
class GridLoader(Composer, _Parser, SafeConstructor, Resolver):
    def __init__(self, text: str):
        _Parser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.depth = 0

    def compose_node(self, parent, index):
        # Composition recurses once per level: unbounded, a deep file is a RecursionError.
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Refused(problem=f"lists and mappings nested deeper than {MAX_DEPTH} levels",
                          problem_mark=self.peek_event().start_mark)
        node = super().compose_node(parent, index)
        self.depth -= 1
        # Aliases reuse a composed node, so counting values per node (once) bounds the expansion.
        if not hasattr(node, "values"):
            children = node.value if isinstance(node, SequenceNode) else (
                [n for pair in node.value for n in pair] if isinstance(node, MappingNode) else [])
            node.values = 1 + sum(child.values for child in children)
            if node.values > MAX_VALUES:
                raise Refused(problem=f"more than {MAX_VALUES:,} values (an alias counts its anchor's "
                                      f"values each time it is used)", problem_mark=node.start_mark)
        return node

    def construct_mapping(self, node, deep=False):
        first_line = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` is meant to be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first_line:
                    raise Refused(problem=f"duplicate key {key!r} (first given at line {first_line[key] + 1})",
                                  problem_mark=key_node.start_mark)
                first_line[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the base class says so with its position
                pass
        return super().construct_mapping(node, deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:  # a date 2024-13-01, an int of 5,000 digits
            raise ConstructorError(problem=str(e), problem_mark=node.start_mark) from None


def read_file(path: Path) -> bytes:
    """The file's bytes, or GridError."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_BYTES + 1)  # bounded, even for /dev/zero
    except OSError as e:
        raise GridError(path, "", f"cannot read the grid file ({e.strerror or e})") from None


def read_yaml(path: Path, content: bytes | None = None) -> object:
    """The file's YAML document (`content`, where given, is what the file holds), or GridError
    with one line saying what is wrong and where."""
    raw = read_file(path) if content is None else content
    if len(raw) > MAX_BYTES:
        raise GridError(path, "", f"larger than {MAX_BYTES >> 20} MiB; a grid file is a few kilobytes of YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GridError(path, "", f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                                  f"save the grid file as UTF-8") from None
    loader = None
    try:
        loader = GridLoader(text)
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "refused" if isinstance(e, Refused) else "not valid YAML"
        raise GridError(path, "", f"{what}{where}: {e.problem}") from None
    except yaml.YAMLError as e:  # the reader's unprintable characters: no mark, a position
        position = getattr(e, "position", None)
        where = f" at offset {position}" if position is not None else ""
        raise GridError(path, "", f"not valid YAML{where}: {getattr(e, 'reason', None) or e}") from None
    finally:
        if loader is not None:
            loader.dispose()
