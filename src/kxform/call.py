"""The call structure of a PyTorch 2 model: ``Call`` (args, kwargs), the names its tensors get, and back.

``torch.export`` flattens a model's ``forward(*args, **kwargs)`` and its result into lists of tensors
(pytree leaves). Triton's PyTorch backend names those leaves two ways (its README, "AOT Inductor
Support"): by ordinal, ``INPUT__i`` / ``OUTPUT__i`` in the leaves' order, or by their place in the
call, ``ARGS[0]``, ``ARGS[2][keyA]``, ``KWARGS[kwarg1]`` for inputs and ``RESULT``, ``RESULT[AAA]``,
``RESULT[BBB][0]`` for outputs. Dicts, tuples and lists are structure; everything else is a leaf.
Leaves are numbered depth first, dicts in their key order, args before kwargs, as ``torch.export`` does.

This module is the one place those names are made and read: by ``kxform.tensors`` (a plugin's
``Call`` → the predictor's inputs; the outputs → ``outputs.result``) and by the Python-backend adapter
of ``kxform triton`` (the config's names → the leaves of a ``.pt2``'s call spec). It imports nothing
heavy: it runs inside Triton's Python stub too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kxform.errors import KxformError, RequestError

__all__ = [
    "Call",
    "Key",
    "flatten",
    "flatten_call",
    "is_forward_name",
    "leaf_name",
    "parse_name",
    "rebuild",
    "rows",
]

Key = str | int  # a dict key, or a tuple/list index
Leaf = tuple[tuple[Key, ...], Any]

_ROOTS = ("ARGS", "KWARGS", "RESULT")
_NAME = re.compile(r"^(ARGS|KWARGS|RESULT)((?:\[[^\[\]\"\s]+\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]\"\s]+)\]")
_BAD_KEY = re.compile(r"[\[\]\"\s]|[^\x21-\x7e]")


@dataclass(frozen=True, slots=True)
class Call:
    """What a plugin would pass to the model's ``forward``: ``model(*args, **kwargs)``.

    Leaves are arrays with the batch axis first (anything ``numpy.asarray`` takes, except a dict,
    tuple or list: those are structure). ``preprocess`` may return one; kxform names its leaves the
    way the predictor's config does (``ARGS[2][keyA]`` or ``INPUT__2``).
    """

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str) or not key or _BAD_KEY.search(key):
        raise RequestError(
            f"{where} has the key {key!r}; keys of a model's call must be non-empty printable strings "
            'without ", [, ] or whitespace (Triton names the tensor by it)'
        )
    return key


def _walk(tree: Any, path: tuple[Key, ...], root: str) -> Iterator[Leaf]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _walk(value, (*path, _check_key(key, leaf_name(root, path))), root)
    elif isinstance(tree, tuple | list):
        for index, value in enumerate(tree):
            yield from _walk(value, (*path, index), root)
    else:
        yield path, tree


def flatten(tree: Any, root: str) -> list[tuple[str, Any]]:
    """The leaves of ``tree`` in call-spec order, each with its forward-based name under ``root``."""
    return [(leaf_name(root, path), leaf) for path, leaf in _walk(tree, (), root)]


def flatten_call(call: Call) -> list[tuple[str, Any]]:
    """A ``Call``'s leaves in the order ``torch.export`` numbers them: args, then kwargs."""
    if not isinstance(call.args, tuple | list):
        raise RequestError(f"Call.args must be a tuple, got {type(call.args).__name__}")
    if not isinstance(call.kwargs, Mapping):
        raise RequestError(f"Call.kwargs must be a dict, got {type(call.kwargs).__name__}")
    return flatten(tuple(call.args), "ARGS") + flatten(call.kwargs, "KWARGS")


def leaf_name(root: str, path: Sequence[Key]) -> str:
    """``leaf_name("ARGS", (2, "keyA")) == "ARGS[2][keyA]"``; ``leaf_name("RESULT", ()) == "RESULT"``."""
    return root + "".join(f"[{key}]" for key in path)


def is_forward_name(name: str) -> bool:
    return _NAME.match(name) is not None


def parse_name(name: str) -> tuple[str, tuple[str, ...]]:
    """``"RESULT[BBB][0]"`` → ``("RESULT", ("BBB", "0"))``; raises for a name that is not forward-based.

    Segments stay strings: whether ``[0]`` is an index or a dict key is the structure's to say.
    """
    match = _NAME.match(name)
    if match is None:
        raise KxformError(
            f"tensor name {name!r} is not a forward-based name: it must be one of {', '.join(_ROOTS)} "
            "followed by [index] or [key] parts, e.g. ARGS[0], KWARGS[mask], RESULT[logits][0]"
        )
    return match[1], tuple(_SEGMENT.findall(match[2]))


def rebuild(flat: Mapping[str, Any], root: str = "RESULT") -> Any:
    """The structure whose leaves are named in ``flat`` (``{"RESULT[BBB][0]": a, ...}`` → ``{"BBB": (a, ...)}``).

    A container whose keys are exactly 0..n-1 becomes a tuple, any other a dict in the order the names
    came. Raises naming the tensor when a name is not forward-based under ``root`` or two clash.
    """
    if not flat:
        raise KxformError(f"there are no tensors to rebuild the model's {root} from")
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        found, segments = parse_name(name)
        if found != root:
            raise KxformError(f"tensor {name!r} is not part of the model's {root} (its name starts with {found})")
        if not segments:
            if len(flat) > 1:
                raise KxformError(f"{root} is a single tensor, yet there are others: {', '.join(flat)}")
            return value
        _insert(tree, segments, value, name)
    return _finish(tree)


def _insert(tree: dict[str, Any], segments: tuple[str, ...], value: Any, name: str) -> None:
    node = tree
    for segment in segments[:-1]:
        child = node.setdefault(segment, {})
        if not isinstance(child, dict):
            raise KxformError(f"tensor {name!r} lies inside another tensor's place; the names clash")
        node = child
    if segments[-1] in node:
        raise KxformError(f"tensor {name!r} clashes with another tensor of the same place")
    node[segments[-1]] = value


def _finish(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    children = {key: _finish(value) for key, value in node.items()}
    if set(children) == {str(i) for i in range(len(children))}:
        return tuple(children[str(i)] for i in range(len(children)))
    return children


def rows(tree: Any) -> list[Any]:
    """One structure per batch row, leaves as plain lists (what a V1 reply carries).

    ``rows({"a": array([[1, 2], [3, 4]])}) == [{"a": [1, 2]}, {"a": [3, 4]}]``.
    """
    leaves = [leaf for _, leaf in _walk(tree, (), "RESULT")]
    if not leaves:
        return []
    count = len(leaves[0])
    return [_row(tree, index) for index in range(count)]


def _row(tree: Any, index: int) -> Any:
    if isinstance(tree, Mapping):
        return {key: _row(value, index) for key, value in tree.items()}
    if isinstance(tree, tuple | list):
        return [_row(value, index) for value in tree]
    row = tree[index]
    return row.tolist() if hasattr(row, "tolist") else row
