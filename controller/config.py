"""The `--config` file: YAML read with line numbers, checked with JSON Schema, errors that point.

Every YAML input of the suite (configs, policies, routing documents, VNF manifests) is read here,
with YAML 1.2 core-schema semantics, as Kubernetes users write it: `20:21` and `22:00` are
strings (YAML 1.1 made them the base-60 integers 1221 and 1320), `yes`/`no`/`on`/`off` are
strings, `010` is ten and `0o10` eight; `<<` merge keys work as in Kubernetes' reader; a
duplicate key is an error. docs/semantics.md has the table, tests/unit/test_config.py the cases.

Every error names the file, the line and the field, e.g.
``lab.yaml:7: l2.mac_age: -3 is less than the minimum of 1``. Sections belong to the core or to
an app, which declares their schemas as class data (`SuiteApp.config_schemas`);
`SectionChecker` checks them, and `Core.parse` decides which sections a config may have.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "lab.yaml")
>>> _ = open(path, "w").write("l2:\\n  mac_age: 60\\n")
>>> load_config(path).section("l2")
{'mac_age': 60}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import yaml
import yamlcore

from controller.errors import ConfigError, dotted
from controller.inputs import check_plain, check_yaml, read_text

MERGE_TAG = "tag:yaml.org,2002:merge"
# JSON Schema's "integer" takes 1000.0; the switch's fields cannot, so here it means an int.
Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


class _DuplicateKey(Exception):
    """Raised while loading; the line map then finds and locates the duplicate."""


def _strict_json(text: str) -> Any:
    """json.loads, but a duplicate key is an error, as in YAML (JSON keeps the last): raised
    as _DuplicateKey once the whole text has parsed, so a syntax error is reported first."""
    duplicated = []

    def unique(pairs: list) -> dict:
        if len({key for key, _ in pairs}) != len(pairs):
            duplicated.append(pairs)
        return dict(pairs)

    data = json.loads(text, object_pairs_hook=unique)
    if duplicated:
        raise _DuplicateKey
    return data


class Loader(yamlcore.CCoreLoader):
    """YAML 1.2 core schema (yamlcore's resolver on libyaml's parser), `<<` merge keys, and no
    duplicate keys (YAML would keep the last silently).

    Merge keys are not in the 1.2 core schema, but Kubernetes' reader (go-yaml) honours them, so
    a manifest that uses them means here what it means there; explicit keys beat merged ones.
    """

    flatten_mapping = yaml.constructor.SafeConstructor.flatten_mapping

    def construct_mapping(self, node, deep=False):
        """A YAML mapping, merge keys (<<) flattened first so explicit keys win.

        Raises
        ------
        _DuplicateKey
            A key written twice in the same mapping (YAML 1.2.2 section 3.2.1.1 requires unique
            keys); the loader turns it into a located ConfigError.
        """
        keys = [k.value for k, _ in node.value if k.tag != MERGE_TAG]
        if len(set(keys)) != len(keys):
            raise _DuplicateKey
        self.flatten_mapping(node)  # merged keys first, so the explicit ones win
        return yaml.constructor.BaseConstructor.construct_mapping(self, node, deep)


Loader.add_implicit_resolver(MERGE_TAG, re.compile(r"^<<$"), ["<"])


def dump_documents(docs: list) -> str:
    """Documents as YAML that `Loader` reads back unchanged (strings that would read as another
    type under YAML 1.2, like '0o10' or '1e3', are quoted)."""
    return yaml.dump_all(docs, Dumper=yamlcore.CCoreDumper, sort_keys=False)


# Label values are strings, as in Kubernetes (map[string]string): an unquoted 1.10 or 010 would
# read as the number 1.1 or 10 and silently stop matching the label "1.10" or "010".
LABELS = {"type": ["object", "null"], "additionalProperties": {"type": "string"}}
# What every Kubernetes-style document shares (TypeMeta, ObjectMeta): checked before its kind is.
OBJECT_HEADER = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
        },
    },
}


def _line_map(node: yaml.Node, path: tuple, lines: dict[tuple, int], file: str) -> None:
    """Record the line of every key and item; reject duplicate keys (YAML keeps one silently)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(
                    file, key_node.start_mark.line + 1, dotted(path + (key,)), "duplicate key"
                )
            seen.add(key)
            _line_map(value_node, path + (key,), lines, file)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), lines, file)


_NOT_YAML = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _compose(text: str) -> yaml.Node | None:
    """The node tree of a text already parsed as data, for its line numbers only.

    Valid JSON is not always YAML that libyaml takes: a surrogate pair escape goes to PyYAML's
    own scanner, characters YAML does not allow (DEL, C1 controls) are blanked first (lines stay
    where they were). None if nothing composes it.
    """
    for loader, source in (
        (Loader, text),
        (yaml.SafeLoader, text),
        (yaml.SafeLoader, _NOT_YAML.sub("?", text)),
    ):
        try:
            return yaml.compose(source, Loader=loader)
        except yaml.YAMLError:
            continue
    return None


@dataclass
class Document:
    """A parsed YAML or JSON file that can say which line any key or item is on.

    Line numbers are only needed for error messages, so they are worked out on first use: a
    ten-thousand-rule file is parsed by the C loader and never composed node by node unless
    something in it is wrong.
    """

    path: str | None = None
    data: Any = None
    text: str | None = field(default=None, repr=False)
    _lines: dict[tuple, int] | None = field(default=None, repr=False)
    _root: Any = field(default=None, repr=False, compare=False)  # composed by `source`

    @property
    def lines(self) -> dict[tuple, int]:
        """Line number (1-based) of every node, by its path of keys and indices.

        Built on first use from the document's text (empty without text) and kept.
        """
        if self._lines is None:
            self._lines = {}
            node = _compose(self.text) if self.text else None
            if node is not None:
                _line_map(node, (), self._lines, self.path or "<config>")
        return self._lines

    def line_of(self, where: tuple) -> int | None:
        """The line of `where`, or of the nearest enclosing key that has one."""
        probe = where
        while probe and probe not in self.lines:
            probe = probe[:-1]
        return self.lines.get(probe)

    def source(self, where: tuple) -> tuple[int | None, str]:
        """(line, text as written) of the node at `where`, from the YAML marks of the
        document's own text (composed on first use and kept); (None, "") if it has none.
        For a trace to name the rule that made a flow."""
        if self._root is None:
            self._root = (_compose(self.text) if self.text else None) or False
        node = self._root or None
        for key in where:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == str(key)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                node = node.value[key] if 0 <= key < len(node.value) else None
            else:
                node = None
        if node is None or not self.text:
            return None, ""
        return node.start_mark.line + 1, self.text[
            node.start_mark.index : node.end_mark.index
        ].rstrip()

    def located(self, where: tuple) -> str:
        """'file:line' of `where` (or of the nearest enclosing key), or 'file' with no line."""
        line = self.line_of(where)
        return f"{self.path}:{line}" if line else str(self.path)

    def error(self, where: tuple, message: str) -> ConfigError:
        """A ConfigError located at `where` (or the nearest enclosing key that has a line)."""
        return ConfigError(self.path or "<config>", self.line_of(where), dotted(where), message)

    def validate(self, schema: dict, prefix: tuple = (), lines_from: Document | None = None):
        """Check against a JSON Schema; the first error (outermost first) is raised, located.

        `prefix` and `lines_from` check a part of a larger document and report it in place.
        """
        errors = sorted(
            Validator(schema).iter_errors(self.data),
            key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))),
        )
        if errors:
            where, message = _locate(errors[0])
            raise (lines_from or self).error(prefix + where, message)


def _syntax_error(path: str, text: str, exc: yaml.YAMLError) -> ConfigError:
    """A located ConfigError for a YAML error: from its mark, or (a character the reader
    refuses, such as a control character) from its position in the text."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        line = mark.line + 1
    else:
        line = text.count("\n", 0, getattr(exc, "position", 0)) + 1
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    if not getattr(exc, "problem", None) and hasattr(exc, "character"):
        problem = f"{problem} (character {exc.character!r})"
    return ConfigError(path, line, "", f"syntax error: {problem}")


def load_document(path: str, json_only: bool = False) -> Document:
    """Read a YAML 1.2 (or, with json_only, strict JSON: RFC 8259) file into a Document.

    Raises
    ------
    ConfigError
        Unreadable, too large or too deep, a syntax error, a duplicate key, or a value YAML
        would read as something else than plain data; each naming the file and line.
    """
    text = read_text(path)
    check_yaml(path, text, Loader)  # JSON is YAML: its depth is checked the same way
    try:
        data = _strict_json(text) if json_only else yaml.load(text, Loader=Loader)
    except json.JSONDecodeError as exc:
        raise ConfigError(path, exc.lineno, "", f"JSON syntax error: {exc.msg}") from None
    except RecursionError:  # JSON that YAML could not read, nested past Python's stack
        raise ConfigError(path, 1, "", "nested too deeply") from None
    except _DuplicateKey:
        _ = Document(path, None, text).lines  # raises, naming the line and the field
        raise AssertionError("a duplicate key the line map did not find") from None
    except yaml.YAMLError as exc:
        raise _syntax_error(path, text, exc) from None
    doc = Document(path, data, text)
    check_plain(path, data, doc.line_of)
    return doc


def load_documents(path: str, text: str | None = None) -> list[Document]:
    """Every non-empty document of a multi-document YAML file (or of `text`, read from it),
    each knowing its own lines.

    Policy files are small and their errors must point, so lines are mapped up front here
    (which also rejects duplicate keys, located), from the same nodes the data is built from.

    Raises ConfigError, located, as `load_document` does.
    """
    text = read_text(path) if text is None else text
    check_yaml(path, text, Loader)
    loader = Loader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            lines: dict[tuple, int] = {}
            _line_map(node, (), lines, path)
            data = loader.construct_document(node)
            if data is not None:
                docs.append(Document(path, data, text, lines))
                check_plain(path, data, docs[-1].line_of)
    except yaml.YAMLError as exc:
        raise _syntax_error(path, text, exc) from None
    finally:
        loader.dispose()
    return docs


class DocumentCache:
    """What a parser made of each YAML file, kept until the file's text changes.

    Owned by whoever parses (an app keeps one for its lifetime), so a reload that edits one
    file does not parse the others again, and `--check`, with an app of its own, parses afresh.
    (Text, not modification time: two edits within the clock's tick, of the same size, still
    count.)
    """

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, Callable], tuple[str, list]] = {}

    def parsed(self, path: str, parse: Callable[[Document], Iterable]) -> list:
        """Everything `parse` makes of each YAML document in `path`, in order.

        Raises:
            ConfigError: the file cannot be read or parsed, or `parse` refused a document.
        """
        text = read_text(path)
        cached = self._parsed.get((path, parse))
        if cached is not None and cached[0] == text:
            return cached[1]
        out = [item for doc in load_documents(path, text) for item in parse(doc)]
        self._parsed[(path, parse)] = (text, out)
        return out


@dataclass
class Config(Document):
    """The whole config file, and the other files it names (watched for reloads)."""

    depends: list[str] = field(default_factory=list)
    # The folder the files the controller writes (flow_log.path) are relative to, when not
    # the config file's: a replica loads the shared config from a private copy
    # (controller/sharedconfig.py) but writes next to its own config file.
    output_base: str | None = None

    def __post_init__(self) -> None:
        if self.data is None:
            self.data = {}

    def section(self, name: str, default: Any = None) -> Any:
        """The top-level section `name` as loaded, or `default` when absent."""
        return self.data.get(name, default)

    def files(self) -> list[str]:
        """Every file this config depends on."""
        return ([self.path] if self.path else []) + self.depends

    def resolve(self, relative: str) -> str:
        """Paths in a config are relative to the config file."""
        base = os.path.dirname(os.path.abspath(self.path)) if self.path else os.getcwd()
        return os.path.normpath(os.path.join(base, relative))

    def resolve_output(self, relative: str) -> str:
        """A file the controller writes (not one it reads): relative to `output_base` when
        set, else to the config file as `resolve`."""
        if self.output_base is None:
            return self.resolve(relative)
        return os.path.normpath(os.path.join(self.output_base, relative))

    def depend(self, path: str) -> None:
        """Watch `path` too: a change to it reloads the config (once per path)."""
        if path not in self.depends:
            self.depends.append(path)

    def listed_files(self, section: str) -> list[tuple[int, str]]:
        """(index in the section, file) for every file a list section names directly or
        finds in a named folder (*.yaml and *.yml, in name order). All of them are watched:
        a file added to or removed from a folder changes the folder.

        Raises ConfigError, located at the entry, for a path that does not exist.
        """
        out = []
        for i, entry in enumerate(self.section(section) or []):
            path = self.resolve(entry)
            if os.path.isdir(path):
                self.depend(path)
                names = sorted(n for n in os.listdir(path) if n.endswith((".yaml", ".yml")))
                out += [(i, os.path.join(path, n)) for n in names]
            elif os.path.exists(path):
                out.append((i, path))
            else:
                raise self.error((section, i), f"{entry}: no such file or folder")
        for _, path in out:
            self.depend(path)
        return out


def load_config(path: str) -> Config:
    """Read a config file: YAML whose top level is a mapping of sections.

    Only the file is checked here; its sections are checked against the schemas of the core
    and of the loaded apps by `Core.parse` (`SectionChecker`), so what is valid depends on the
    apps loaded, never on the modules imported.

    Raises:
        ConfigError: unreadable, not YAML, or not a mapping; naming the file, line and field.
    """
    doc = load_document(path)
    cfg = Config(path, doc.data, doc.text)
    if not isinstance(cfg.data, dict):
        raise cfg.error((), "the top level must be a mapping of sections")
    return cfg


class SectionChecker:
    """Checks a config's sections against their JSON Schemas, located (file, line, field).

    A list section's items are checked one at a time, and those valid at this checker's last
    check are not checked again: a reload that edits one of a thousand endpoints checks one.
    One checker per core: what it remembers lives exactly as long as the core.
    """

    def __init__(self) -> None:
        self._valid: dict[str, tuple[Mapping, set[str]]] = {}  # section -> (schema, items)

    def check(self, config: Config, schemas: Mapping[str, Mapping]) -> None:
        """Check every section named in `schemas` that `config` has; other sections are the
        caller's to judge. The first error, outermost first, is raised.

        Raises:
            ConfigError: naming the file, the line and the field.
        """
        present = {k: v for k, v in config.data.items() if k in schemas}
        shallow = {k: _without_items(schemas[k]) for k in present}
        Document(config.path, present).validate(
            {"type": "object", "properties": shallow}, lines_from=config
        )
        for section in present:
            if shallow[section] is not schemas[section]:
                self._check_items(config, section, schemas[section])

    def _check_items(self, config: Config, section: str, schema: Mapping) -> None:
        last_schema, seen = self._valid.get(section, (None, set()))
        if last_schema is not schema:
            seen = set()
        validator = Validator(schema["items"])
        valid = set()
        for i, item in enumerate(config.data[section]):
            key = json.dumps(item, sort_keys=True)  # plain JSON (inputs.check_plain): exact
            if key not in seen:
                error = next(iter(validator.iter_errors(item)), None)
                if error is not None:
                    Document(config.path, item).validate(
                        schema["items"], (section, i), lines_from=config
                    )
            valid.add(key)
        self._valid[section] = (schema, valid)


def _without_items(schema: Mapping) -> Mapping:
    """A list section's schema minus its items, which _check_items checks one at a time."""
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return {k: v for k, v in schema.items() if k != "items"}
    return schema


def _locate(err: jsonschema.ValidationError) -> tuple[tuple, str]:
    """Where the error is and what to say; an unknown key is reported at the key itself, and a
    number or boolean where a string belongs says to quote it (YAML read `1.10` as a number)."""
    where = tuple(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})), key=str)
        if extra:
            return where + (extra[0],), "unknown key"
    expected = err.validator_value if err.validator == "type" else None
    if expected in ("string", ["string"]) and isinstance(err.instance, int | float):
        return where, f"{err.instance!r} is not a string: quote it"
    return where, err.message
