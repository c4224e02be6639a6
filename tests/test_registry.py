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


def test_model_arguments_of_the_wrong_type_are_named():
    """`--set model.args.embed_dim=abc` used to fail deep inside the model with
    "not all arguments converted during string formatting"."""
    from ramir.models import build_model

    with pytest.raises(TypeError, match="model 'ram_swinir': key 'embed_dim': expected int, "):
        build_model("ram_swinir", embed_dim="abc")
    with pytest.raises(TypeError, match=r"key 'enc_blk_nums\[1\]': expected int"):
        build_model("nafnet", enc_blk_nums=[1, "x"])
