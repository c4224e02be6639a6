import pytest

from ramir.registry import Registry, UnknownArgumentError


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
    r.remove("a")
    assert r.names() == ["b"] and "a" not in r
    with pytest.raises(KeyError, match="unknown widget 'a'; choose one of: b"):
        r.remove("a")


def test_model_arguments_of_the_wrong_type_are_named():
    """`--set model.args.embed_dim=abc` used to fail deep inside the model with
    "not all arguments converted during string formatting"."""
    from ramir.models import build_model

    with pytest.raises(TypeError, match="model 'ram_swinir': key 'embed_dim': expected int, "):
        build_model("ram_swinir", embed_dim="abc")
    with pytest.raises(TypeError, match=r"key 'enc_blk_nums\[1\]': expected int"):
        build_model("nafnet", enc_blk_nums=[1, "x"])
    # a keyword a network passes on to its base class's constructor (**kwargs)
    with pytest.raises(TypeError, match="model 'promptir': key 'dim': expected int, "):
        build_model("promptir", dim="abc")


def _scan(root, *, split="train", layout="x"):
    return root


class _Net:
    def __init__(self, width, depth=2, *args, act="relu", **kwargs):
        pass


def test_kwargs_of_reads_the_signature():
    import inspect

    r = Registry("net")
    r.add("net", _Net)
    # positional-or-keyword and keyword-only, in order; no self, *args or **kwargs
    assert r.kwargs_of("net") == {"width": inspect.Parameter.empty, "depth": 2, "act": "relu"}
    layouts = Registry("layout", word="option", keyword_only=True, hidden={"layout"})
    layouts.add("scan", _scan)
    assert layouts.kwargs_of("scan") == {"split": "train"}
    r.add("constant", 3)
    with pytest.raises(TypeError, match="not callable"):
        r.kwargs_of("constant")
    with pytest.raises(KeyError, match="unknown net 'nett'"):
        r.kwargs_of("nett")


class _Base:
    def __init__(self, width: int = 8, depth: int = 2, *, act: str) -> None:
        pass


class _Wide(_Base):
    def __init__(self, *, gate: bool = True, act: str = "gelu", **kwargs) -> None:
        super().__init__(act=act, **kwargs)


class _Wider(_Wide):
    def __init__(self, width: int = 16, scale: float = 1.0, **kwargs) -> None:
        super().__init__(width, **kwargs)


def test_kwargs_passed_on_to_the_base_class_are_listed():
    """A constructor that takes **kwargs and passes them to its base class's takes that
    constructor's keywords too: the base's first, then its own; one it declares again
    has its default, in its own place (``act``) or, passed on by position, in the
    base's (``width``)."""
    r = Registry("net")
    r.add("wide", _Wide)
    r.add("wider", _Wider)
    assert list(r.kwargs_of("wide").items()) == [
        ("width", 8),
        ("depth", 2),
        ("gate", True),
        ("act", "gelu"),
    ]
    assert list(r.kwargs_of("wider").items()) == [
        ("width", 16),
        ("depth", 2),
        ("gate", True),
        ("act", "gelu"),
        ("scale", 1.0),
    ]
    r.check_kwargs("wider", {"width": 4, "act": "relu", "scale": 2.0})
    with pytest.raises(UnknownArgumentError, match="unknown argument.s. widht"):
        r.check_kwargs("wider", {"widht": 4})
    r.add("net", _Net)  # its **kwargs reach object's constructor: nothing more
    assert list(r.kwargs_of("net")) == ["width", "depth", "act"]


def test_the_restormer_family_lists_its_release_keywords():
    """Restormer, the PromptIRs and RAM++'s networks take swz30's Restormer keywords
    through their shared constructor, with their own in their release's order."""
    from ramir.models import MODELS

    family = [
        "inp_channels",
        "out_channels",
        "dim",
        "num_blocks",
        "num_refinement_blocks",
        "heads",
        "ffn_expansion_factor",
        "bias",
        "LayerNorm_type",
    ]
    assert list(MODELS.kwargs_of("restormer")) == [*family, "dual_pixel_task", "normalization"]
    assert list(MODELS.kwargs_of("ram_promptir")) == [*family, "decoder", "normalization"]
    assert MODELS.kwargs_of("ram_promptir")["normalization"] == "imagenet"
    assert MODELS.kwargs_of("promptir") == {
        **MODELS.kwargs_of("ram_promptir"),
        "normalization": "none",
    }
    assert list(MODELS.kwargs_of("adasam_restormer_woskip")) == [*family, "normalization"]
    assert list(MODELS.kwargs_of("restormer_rfr"))[9:12] == [
        "dino_dim",
        "gate_hidden",
        "normalization",
    ]
    assert MODELS.kwargs_of("restormer")["num_blocks"] == (4, 6, 6, 8)


def test_the_swinir_family_lists_the_official_keywords():
    """SwinIR and RAM-SwinIR take the official SwinIR keywords through their shared
    constructor, in the official order, with their own defaults and options after."""
    from ramir.models import MODELS

    official = ["img_size", "patch_size", "in_chans", "embed_dim", "depths", "num_heads"]
    official += ["window_size", "mlp_ratio", "qkv_bias", "qk_scale", "drop_rate"]
    official += ["attn_drop_rate", "drop_path_rate", "ape", "patch_norm", "use_checkpoint"]
    official += ["upscale", "img_range", "upsampler", "resi_connection"]
    swinir, ram = MODELS.kwargs_of("swinir"), MODELS.kwargs_of("ram_swinir")
    assert list(swinir) == [*official, "normalization", "padding", "attn_impl"]
    assert list(ram) == [*official, "normalization", "mask_token", "attn_impl"]
    assert (swinir["img_size"], ram["img_size"]) == (128, 64)
    assert (swinir["normalization"], ram["normalization"]) == ("none", "imagenet")
    assert {k: v for k, v in swinir.items() if k not in ("img_size", "normalization")} == {
        k: v for k, v in ram.items() if k in official and k != "img_size"
    } | {"padding": "reflect", "attn_impl": "fast"}


def test_check_kwargs_names_unknown_and_valid_arguments():
    r = Registry("net")
    r.add("net", _Net)
    r.check_kwargs("net", {"width": 1, "act": "gelu"})
    with pytest.raises(UnknownArgumentError) as info:
        r.check_kwargs("net", {"widht": 1, "act": "gelu", "deep": 3})
    assert str(info.value) == (
        "net 'net' got unknown argument(s) deep, widht; valid arguments: width, depth, act"
    )
    # callers that expect either exception type see it
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    empty = Registry("task", word="option", keyword_only=True)
    empty.add("t", lambda img: img)
    with pytest.raises(
        ValueError, match="task 't' got unknown option\\(s\\) a; valid options: \\(none\\)"
    ):
        empty.check_kwargs("t", ["a"])


def test_models_degradations_and_layouts_share_the_unknown_argument_message():
    from ramir import degradations
    from ramir.data.datasets import LAYOUTS, layout_options, scan
    from ramir.models import MODELS, build_model, model_kwargs

    for name in MODELS:
        assert MODELS.kwargs_of(name) == model_kwargs(name)
    assert degradations.parameters("jpeg") == {"quality": None, "quality_range": (10, 90)}
    assert layout_options("lol_v2") == LAYOUTS.kwargs_of("lol_v2")
    assert "layout" not in layout_options("lol_v2")

    pattern = r"^{} '{}' got unknown {}\(s\) bogus; valid {}s: "
    with pytest.raises(TypeError, match=pattern.format("model", "nafnet", "argument", "argument")):
        build_model("nafnet", bogus=1)
    with pytest.raises(
        UnknownArgumentError, match=pattern.format("degradation", "jpeg", "parameter", "parameter")
    ):
        degradations.validate_params("jpeg", {"bogus": 1})
    with pytest.raises(
        UnknownArgumentError, match=pattern.format("dataset layout", "lol_v2", "option", "option")
    ):
        scan("lol_v2", ".", bogus=1)
