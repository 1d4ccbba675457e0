"""The topic exchange: binding keys are patterns over dot-separated words.

``*`` stands for exactly one word and ``#`` for zero or more. Words may be
empty ("a..b" has three words), and, as in RabbitMQ, the empty key has no
words at all, so ``#`` matches it and ``*`` does not.

Binding keys are kept in a trie of words built at bind time; routing walks
the trie once per routing key instead of trying every pattern. Results are
kept per routing key in a bounded cache that any bind or unbind empties,
since most traffic repeats a small set of keys.

The walk visits each (trie node, word position) pair at most once: a ``#``
node remembers, per walk, the lowest position it has been entered at, and
entering it again at that position or later would only repeat work. Without
this, keys like ``#.#.#`` would cost a power of the routing key's length.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import ClassVar

from .base import ExchangeType

__all__ = ["TopicExchange", "split_words"]


def split_words(key: str) -> list[str]:
    """The words of a routing or binding key; the empty key has none."""
    return key.split(".") if key else []


class _Node:
    """One word position in the trie."""

    __slots__ = ("destinations", "hash", "low", "stamp", "star", "words")

    def __init__(self) -> None:
        self.words: dict[str, _Node] = {}  # literal words only
        self.star: _Node | None = None
        self.hash: _Node | None = None
        # Destinations of the patterns ending here, each with the number of
        # bindings (differing in arguments) that put it there.
        self.destinations: dict[Hashable, int] = {}
        # Walk bookkeeping for a '#' node: the walk it was last entered in,
        # and the lowest word position it was entered at during that walk.
        self.stamp = -1
        self.low = 0

    def child(self, word: str) -> _Node | None:
        if word == "*":
            return self.star
        if word == "#":
            return self.hash
        return self.words.get(word)

    def add_child(self, word: str) -> _Node:
        node = self.child(word)
        if node is not None:
            return node
        node = _Node()
        if word == "*":
            self.star = node
        elif word == "#":
            self.hash = node
        else:
            self.words[word] = node
        return node

    def drop_child(self, word: str) -> None:
        if word == "*":
            self.star = None
        elif word == "#":
            self.hash = None
        else:
            del self.words[word]

    def is_empty(self) -> bool:
        return not (self.destinations or self.words) and (
            self.star is None and self.hash is None
        )


class TopicExchange(ExchangeType):
    """Routes on dot-separated word patterns with ``*`` and ``#``."""

    type_name = "topic"

    cache_size: ClassVar[int] = 4096
    """How many routing keys keep their routing result between changes."""

    __slots__ = ("_cache", "_root", "_stamp")

    def __init__(self) -> None:
        super().__init__()
        self._root = _Node()
        self._cache: dict[str, frozenset[Hashable]] = {}
        self._stamp = 0

    def route(
        self, routing_key: str, headers: Mapping[str, object] | None
    ) -> frozenset[Hashable]:
        """The destinations whose binding pattern matches ``routing_key``."""
        cache = self._cache
        found = cache.get(routing_key)
        if found is not None:
            return found

        found = self.match(routing_key)
        if len(cache) >= self.cache_size:
            del cache[next(iter(cache))]  # the oldest entry
        cache[routing_key] = found
        return found

    def match(self, routing_key: str) -> frozenset[Hashable]:
        """Walk the trie for ``routing_key``, bypassing the cache."""
        out: set[Hashable] = set()
        self._stamp += 1
        self._walk(self._root, split_words(routing_key), 0, out)
        return frozenset(out)

    def _walk(
        self, node: _Node, words: Sequence[str], i: int, out: set[Hashable]
    ) -> None:
        # The literal branch is followed in the loop; '*' and '#' recurse.
        n = len(words)
        while True:
            if node.hash is not None:
                self._walk_hash(node.hash, words, i, out)
            if i == n:
                if node.destinations:
                    out.update(node.destinations)
                return
            if node.star is not None:
                self._walk(node.star, words, i + 1, out)
            nxt = node.words.get(words[i])
            if nxt is None:
                return
            node = nxt
            i += 1

    def _walk_hash(
        self, node: _Node, words: Sequence[str], i: int, out: set[Hashable]
    ) -> None:
        # '#' swallows words[i:j] for every j from i on. Entered earlier in
        # this walk at a position at or below i, it has covered all of these.
        if node.stamp == self._stamp and node.low <= i:
            return
        node.stamp = self._stamp
        node.low = i
        for j in range(i, len(words) + 1):
            self._walk(node, words, j, out)

    def index_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        node = self._root
        for word in split_words(routing_key):
            node = node.add_child(word)
        node.destinations[destination] = node.destinations.get(destination, 0) + 1
        self._cache.clear()

    def unindex_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        words = split_words(routing_key)
        path = [self._root]
        for word in words:
            child = path[-1].child(word)
            if child is None:
                raise KeyError(f"topic binding {routing_key!r} is not indexed")
            path.append(child)

        node = path[-1]
        left = node.destinations[destination] - 1
        if left:
            node.destinations[destination] = left
        else:
            del node.destinations[destination]
        # Prune the nodes this pattern alone kept alive.
        for depth in range(len(words), 0, -1):
            if not path[depth].is_empty():
                break
            path[depth - 1].drop_child(words[depth - 1])
        self._cache.clear()
