import pytest

from ramir.registry import Registry


def test_registry_lists_choices_on_unknown_name():
    r = Registry[int]("widget")
    r.add("b", 2)
    r.add("a", 1)
    assert r.names() == ["a", "b"]
    assert r.get("a") == 1 and "a" in r and len(r) == 2
    with pytest.raises(KeyError, match="unknown widget 'c'; choose one of: a, b"):
        r.get("c")
    with pytest.raises(KeyError, match="already registered"):
        r.add("a", 3)
