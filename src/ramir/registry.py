"""A plain name -> object registry.

No import-time scanning: every entry is added explicitly by the module that owns the
registry (for example ``ramir.models`` adds its backbones in its ``__init__``).
Unknown names raise an error that lists the valid choices, and so do unknown keyword
arguments (:meth:`Registry.check_kwargs`): models, degradations and dataset layouts all
report a wrong keyword with the same message.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from ramir.errors import RamirError, UnknownNameError

__all__ = ["Registry", "UnknownArgumentError", "keyword_sources", "keyword_parameters"]

T = TypeVar("T")


class UnknownArgumentError(RamirError, TypeError, ValueError):
    """A registered callable was given keyword arguments it does not take.

    A ``TypeError`` (what Python raises for a wrong keyword) and a ``ValueError`` (what
    config validation catches), so either ``except`` clause sees it.
    """


def keyword_sources(item: Any) -> list[Any]:
    """The callables whose keywords ``item`` takes: a function itself; for a class, its
    constructor (``__init__``), then, while a constructor takes ``**kwargs``, the
    constructor of the base class it passes them on to (``super().__init__(**kwargs)``;
    never ``object``'s).
    """
    if not inspect.isclass(item):
        return [item]
    sources = []
    for owner in item.__mro__:
        if owner is object or "__init__" not in vars(owner):
            continue
        init = vars(owner)["__init__"]
        sources.append(init)
        kinds = [p.kind for p in inspect.signature(init).parameters.values()]
        if inspect.Parameter.VAR_KEYWORD not in kinds:
            break
    return sources


def keyword_parameters(item: Any) -> dict[str, inspect.Parameter]:
    """The named parameters of ``item`` and of the constructors it passes ``**kwargs`` to
    (:func:`keyword_sources`): the base's first, in its order, then the subclass's own
    in its order. A parameter the subclass declares again (another default) is the
    subclass's: in the base's place when both take it by position (it passes it on in
    that position), else in the subclass's. ``self``, ``*args`` and ``**kwargs`` are
    left out."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params: dict[str, inspect.Parameter] = {}
    for source in reversed(keyword_sources(item)):
        listed = list(inspect.signature(source).parameters.values())
        if inspect.isclass(item):
            listed = listed[1:]  # self
        for p in listed:
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            base = params.get(p.name)
            if base is None or not base.kind == p.kind == positional:
                params.pop(p.name, None)  # listed again at the end
            params[p.name] = p
    return params


class Registry(Generic[T]):
    """A named dict with helpful errors.

    >>> r = Registry[int]("number")
    >>> r.add("one", 1)
    >>> r.get("one")
    1

    When the entries are callables (classes or functions), the registry also knows their
    keyword arguments:

    * ``word``: what the message calls an argument (``"parameter"`` for degradations,
      ``"option"`` for dataset layouts);
    * ``keyword_only``: count only keyword-only parameters (functions such as
      ``fn(img, rng, *, sigma=None)`` whose leading positional parameters are not
      options); otherwise every parameter that can be passed by keyword counts;
    * ``hidden``: parameter names that are not offered to users.

    >>> def blur(img, *, sigma=1.0):
    ...     return img
    >>> b = Registry("filter", word="parameter", keyword_only=True)
    >>> b.add("blur", blur)
    >>> b.kwargs_of("blur")
    {'sigma': 1.0}
    >>> b.check_kwargs("blur", {"sigam": 2})
    Traceback (most recent call last):
    ...
    ramir.registry.UnknownArgumentError: filter 'blur' got unknown parameter(s) sigam; valid parameters: sigma
    """

    def __init__(
        self,
        kind: str,
        *,
        word: str = "argument",
        keyword_only: bool = False,
        hidden: Iterable[str] = (),
    ) -> None:
        self.kind = kind
        self.word = word
        self.keyword_only = keyword_only
        self.hidden = frozenset(hidden)
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> None:
        if name in self._items:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item

    def remove(self, name: str) -> None:
        """Drop entry ``name`` (an unknown name raises, listing the choices)."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def kwargs_of(self, name: str) -> dict[str, Any]:
        """The keyword arguments entry ``name`` takes, in signature order, with defaults.

        A required argument maps to ``inspect.Parameter.empty``. For a class this is its
        constructor (without ``self``), with the keywords that a ``**kwargs`` passes on
        to its base class's constructor (:func:`keyword_parameters`); ``*args`` and
        ``**kwargs`` themselves are never listed.
        """
        item = self.get(name)
        if not callable(item):
            raise TypeError(f"{self.kind} {name!r} is not callable; it takes no arguments")
        kinds = (
            (inspect.Parameter.KEYWORD_ONLY,)
            if self.keyword_only
            else (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
        return {
            p.name: p.default
            for p in keyword_parameters(item).values()
            if p.kind in kinds and p.name not in self.hidden
        }

    def check_kwargs(self, name: str, kwargs: Mapping[str, Any] | Iterable[str]) -> None:
        """Raise :class:`UnknownArgumentError` if ``kwargs`` has a key entry ``name`` lacks.

        The message lists the unknown keys (sorted) and every valid one, e.g.
        ``model 'nafnet' got unknown argument(s) widht; valid arguments: width, ...``.
        """
        valid = self.kwargs_of(name)
        unknown = sorted(str(k) for k in kwargs if k not in valid)
        if unknown:
            raise UnknownArgumentError(
                f"{self.kind} {name!r} got unknown {self.word}(s) {', '.join(unknown)}; "
                f"valid {self.word}s: {', '.join(valid) or '(none)'}"
            )

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
