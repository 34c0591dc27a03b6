"""YAML loading that remembers where every value came from.

Mappings load as :class:`MarkedDict` and sequences as :class:`MarkedList`; both are plain dict/list
subclasses that also carry the ``file:line`` of themselves and of each of their items, so that any
error found later (by the JSON Schema check or by the resolver) can name the line to fix.

Only safe loading is used: YAML tags that would construct Python objects are errors. Duplicate keys
in one mapping are errors too (PyYAML would silently keep the last one, hiding a typo).
"""

import yaml

from sitedist.errors import ConfigError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Mark:
    __slots__ = ("file", "line")

    def __init__(self, file, line):
        self.file = file
        self.line = line

    def __str__(self):
        return f"{self.file}:{self.line}"

    __repr__ = __str__


class MarkedDict(dict):
    """A mapping with ``mark`` (where it starts) and ``key_marks`` (where each key stands)."""

    mark = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_marks = {}

    def mark_of(self, key):
        return self.key_marks.get(key, self.mark)


class MarkedList(list):
    """A sequence with ``mark`` and ``item_marks`` (one per item)."""

    mark = None

    def __init__(self, *args):
        super().__init__(*args)
        self.item_marks = []

    def mark_of(self, index):
        if isinstance(index, int) and 0 <= index < len(self.item_marks):
            return self.item_marks[index]
        return self.mark


def _mark(loader, node):
    return Mark(loader.filename, node.start_mark.line + 1)


class _MarkedLoader(_Loader):
    filename = "<string>"

    def construct_marked_mapping(self, node):
        self.flatten_mapping(node)
        result = MarkedDict()
        result.mark = _mark(self, node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConfigError("a mapping key must be a plain name", where=str(_mark(self, key_node)))
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                raise ConfigError(
                    f"duplicate key '{key}' (first at line {result.key_marks[key].line})",
                    where=str(_mark(self, key_node)),
                    hint="remove one of them; YAML keeps only the last",
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_marks[key] = _mark(self, key_node)
        return result

    def construct_marked_sequence(self, node):
        result = MarkedList(self.construct_object(child, deep=True) for child in node.value)
        result.mark = _mark(self, node)
        result.item_marks = [_mark(self, child) for child in node.value]
        return result


_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _MarkedLoader.construct_marked_mapping)
_MarkedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
                              _MarkedLoader.construct_marked_sequence)


def load_text(text, filename):
    """Parse YAML text; ``filename`` is what errors will name."""
    loader = _MarkedLoader(text)  # a SafeLoader subclass: no Python objects from tags
    loader.filename = filename
    try:
        doc = loader.get_single_data()
        _check_size(doc, filename)
        return doc
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, filename) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", where=filename) from None
    finally:
        loader.dispose()


_OPENERS = {"flow mapping": "'{'", "flow sequence": "'['", "quoted scalar": "quote"}


def _syntax_error(exc, filename):
    """A ConfigError for a YAML syntax error: the line where the parser noticed it and, when something
    opened earlier is still open (a bracket, a brace, a quote), the line that opened it: that is
    usually the line to fix."""
    line = exc.problem_mark.line + 1 if exc.problem_mark else None
    where = f"{filename}:{line}" if line else filename
    problem = exc.problem or "invalid YAML"
    if "could not determine a constructor" in str(exc):
        return ConfigError(f"YAML syntax error: YAML tags are not allowed here ({problem})", where=where,
                           hint=exc.context or "remove the tag (!!python/..., !name): values are plain data")
    opened = exc.context_mark.line + 1 if exc.context_mark else None
    what = next((v for k, v in _OPENERS.items() if k in (exc.context or "")), None)
    if what and opened and opened != line:
        closer = {"'{'": "'}'", "'['": "']'"}.get(what, "the closing quote")
        return ConfigError(f"YAML syntax error: the {what} opened at line {opened} is not closed ({problem} "
                           f"at line {line})", where=f"{filename}:{opened}",
                           hint=f"add {closer} where the value ends on line {opened}, or check the lines "
                                f"between {opened} and {line}")
    hint = exc.context or "check indentation and quoting on this line"
    if exc.context and opened and opened != line:
        hint += f" (started at line {opened})"
    return ConfigError(f"YAML syntax error: {problem}", where=where, hint=hint)


MAX_VALUES = 100_000


def _check_size(doc, filename):
    """Refuse documents whose aliases add more than MAX_VALUES values (a "billion laughs" bomb would
    make every later step that walks the document take forever). A large document without aliases is
    as big as its text and is fine."""
    sizes = {}
    written = 0   # values as written: each mapping or list once, however often an alias repeats it

    def size(node):
        nonlocal written
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key not in sizes:
            sizes[key] = 0  # a recursive alias counts once
            children = list(node.values() if isinstance(node, dict) else node)
            written += 1 + sum(1 for child in children if not isinstance(child, (dict, list)))
            sizes[key] = 1 + sum(size(child) for child in children)
        return sizes[key]

    expanded = size(doc)
    if expanded - written > MAX_VALUES:
        raise ConfigError(f"the document expands to more than {MAX_VALUES} values through YAML aliases "
                          f"({expanded} values from {written} written)",
                          where=filename, hint="use fewer or smaller aliases (&name / *name)")


def load_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return load_text(text, str(path))


def mark_at(document, path):
    """The most precise mark for the value at ``path`` (a sequence of keys/indices) in ``document``."""
    node = document
    best = getattr(document, "mark", None)
    for step in path:
        if isinstance(node, (MarkedDict, MarkedList)):
            found = node.mark_of(step)
            if found is not None:
                best = found
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            break
    return best
