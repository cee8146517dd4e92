"""YAML as configs and template headers are read: safe tags only, every key once, bounded aliases.

PyYAML's safe loader builds no Python objects from tags, but keeps the last of two
equal keys silently (`seed: 1` then `seed: 2` gives 2); here that is an error with the
line of each.

Nor does it bound aliases: nine lines of `b: &b [*a, *a, ...]` (the "billion laughs")
load in a millisecond as shared references and become 387 million strings wherever the
value is walked (pydantic, json.dumps of a `parse.schema` for the engine). Here the
document is measured before anything is built, as if every alias were written out: the
aliases may add at most MAX_ALIAS_NODES nodes and MAX_ALIAS_CHARS characters of scalars
to what the document itself holds, and none may refer to a node that contains it. What
passes is an error with the line of the first node that expands too far. A long document
without aliases is not bounded here (its size is its own).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_ALIAS_NODES = 100_000
MAX_ALIAS_CHARS = 1_000_000


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader (no tags that build Python objects), where a key given twice in
    one mapping is an error: YAML says keys are unique, PyYAML would keep the last silently."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges: later keys override on purpose
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: the base constructor reports it
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice (first on line {first + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def check_aliases(root: yaml.Node) -> None:
    """Refuse a composed document whose aliases expand it too far, or refer to a node containing them.

    PyYAML composes an alias as the anchored node itself, so the document is a graph of
    shared nodes; each node's size when written out is computed once (post-order, no
    recursion), so a bomb is measured in the time its text takes to read.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, scalar characters) written out
    finished: list[yaml.Node] = []
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = [sizes[id(k)] for k in _children(node)]
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            sizes[key] = (1 + sum(n for n, _ in kids), own + sum(c for _, c in kids))
            finished.append(node)
        elif key in on_path:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains itself (a recursive structure)",
                                              node.start_mark)
        elif key not in sizes:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in reversed(_children(node)))
    own_nodes = len(sizes)
    own_chars = sum(len(n.value) for n in finished if isinstance(n, yaml.ScalarNode))
    for node in finished:  # innermost first: the first node past the bound is where the bomb is
        nodes, chars = sizes[id(node)]
        if nodes - own_nodes > MAX_ALIAS_NODES or chars - own_chars > MAX_ALIAS_CHARS:
            raise yaml.composer.ComposerError(
                None, None,
                f"aliases expand this to {nodes:,} nodes and {chars:,} characters from the document's own {own_nodes:,} and"
                f" {own_chars:,}: more than the {MAX_ALIAS_NODES:,} nodes and {MAX_ALIAS_CHARS:,} characters aliases may add",
                node.start_mark)


class _BoundedLoader(_UniqueKeyLoader):
    """The unique-key loader whose document is measured (check_aliases) before anything is constructed."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            check_aliases(node)
        return node


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(text: str) -> Any:
    """Parse YAML as every config and template header is read: safe tags only, unique keys, bounded aliases."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # PyYAML composes and constructs recursively
        raise yaml.composer.ComposerError(None, None, "nested too deeply to read (thousands of levels of [ or {)", None) from None
