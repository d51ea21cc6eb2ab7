"""Text pools, prompt templates and cached text embeddings (cliplens.text)."""

from __future__ import annotations

import re
import shutil
import zlib

import pytest
import torch

from cliplens.errors import CliplensError
from cliplens.evaluate.zeroshot import classifier
from cliplens.text import (
    cache_path,
    default_cache_dir,
    descriptions,
    embed_texts,
    get_pool,
    imagenet,
    imagenet_classnames,
    read_pool,
    resolve_templates,
    template_average,
    words,
)
from cliplens.text.descriptions import PATTERNS_IN_ORDER, all_descriptions, article, plural

# float32 unit vectors after two normalisations and a sum of K <= 80 terms: each step rounds at eps32 = 1.2e-7
# relative, so components (|x| <= 1) differ from the float64 oracle by a few 1e-7 at most; 1e-6 leaves headroom and
# is still far below any real mistake (a wrong template or a missing renormalisation moves components by >1e-2).
UNIT_ATOL = 1e-6


class FakeLens:
    """A deterministic stand-in for a CLIP lens: hashed character trigrams through a fixed random linear map."""

    FEATURES = 64

    def __init__(self, fingerprint: str = "fake-a", precision: str = "fp32", dim: int = 12, seed: int = 0):
        self.name = "fake-clip"
        self.fingerprint = fingerprint
        self.precision = precision
        generator = torch.Generator().manual_seed(seed)
        self.weights = torch.randn(self.FEATURES, dim, generator=generator, dtype=torch.float64)
        self.calls = 0
        self.prompts: list[str] = []

    def features(self, text: str) -> torch.Tensor:
        counts = torch.zeros(self.FEATURES, dtype=torch.float64)
        padded = f"  {text} "
        for i in range(len(padded) - 2):
            counts[zlib.crc32(padded[i : i + 3].encode()) % self.FEATURES] += 1.0
        return counts

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        self.calls += 1
        self.prompts.extend(texts)
        return (torch.stack([self.features(text) for text in texts]) @ self.weights).float() * 7.0


def literal_template_average(lens: FakeLens, texts: list[str], templates: tuple[str, ...]) -> torch.Tensor:
    """The recipe written out one prompt at a time in float64."""
    rows = []
    for text in texts:
        units = []
        for template in templates:
            vector = lens.encode_text([template.format(text)])[0].double()
            units.append(vector / vector.norm())
        mean = torch.stack(units).mean(0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


def assert_clean_pool(texts: list[str]) -> None:
    assert texts, "a pool must not be empty"
    assert len(set(texts)) == len(texts), "a pool must not repeat texts"
    assert all(isinstance(t, str) and t and t == t.strip() for t in texts), "texts must be stripped and non-empty"


# --- pools ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, size", [("words", 30_000), ("descriptions", 3_500), ("imagenet", 998)])
def test_builtin_pools_are_deterministic_clean_and_default_sized(name: str, size: int) -> None:
    first = get_pool(name)
    assert len(first) == size
    assert_clean_pool(first)
    assert get_pool(name) == first


@pytest.mark.parametrize("n", [1, 1234, 3498])
def test_words_size_is_the_n_most_frequent_plain_words(n: int) -> None:
    pool = words(n)
    assert len(pool) == n
    assert pool == words(5000)[:n]
    assert all(re.fullmatch("[a-z]+", word) for word in pool)
    assert pool[0] == "the"


def test_descriptions_are_balanced_prefixes_of_the_full_generator() -> None:
    full = all_descriptions()
    assert_clean_pool(full)
    assert len(full) > 30_000
    small = descriptions(300)
    assert small == full[:300] == descriptions()[:300]
    default = set(descriptions())
    for pattern in PATTERNS_IN_ORDER:  # every pattern contributes to the default pool
        assert default & set(pattern()), pattern.__name__
    for example in ("two dogs on a beach", "a red brick wall", "a watercolor painting of a harbor"):
        assert example in full


def test_descriptions_use_the_right_article() -> None:
    assert article("umbrella") == "an umbrella"
    assert article("red car") == "a red car"
    assert article("hour") == "an hour"
    assert article("unicorn") == "a unicorn"
    assert plural("mouse") == "mice" and plural("box") == "boxes" and plural("butterfly") == "butterflies"
    assert plural("key") == "keys"
    for text in all_descriptions():
        for match in re.finditer(r"\b(a|an) (\w)", text):
            vowel = match.group(2) in "aeiou"
            assert (match.group(1) == "an") == vowel or match.group(2) == "h", text


def test_imagenet_pool_drops_the_two_repeated_class_names() -> None:
    names = imagenet_classnames()
    assert len(names) == 1000
    pool = imagenet()
    assert pool == list(dict.fromkeys(names))
    assert imagenet(10) == names[:10]


def test_shapes_pool_is_the_shapes_vocabulary() -> None:
    try:
        from cliplens.shapes import VOCABULARY
    except ImportError:
        pytest.skip("cliplens.shapes.VOCABULARY is not available yet")
    pool = get_pool("shapes")
    assert_clean_pool(pool)
    assert set(pool) == {word.strip() for group in VOCABULARY.values() for word in group}


def test_file_pool_strips_drops_empties_and_repeats_keeping_order(tmp_path) -> None:
    path = tmp_path / "concepts.txt"
    path.write_text("  cat\t\n\ndog\n\t\ncat\nbird of prey  \r\n  \ndog\t\n", encoding="utf-8")
    assert read_pool(path) == ["cat", "dog", "bird of prey"]
    assert get_pool(str(path)) == ["cat", "dog", "bird of prey"]
    assert get_pool(path, size=2) == ["cat", "dog"]


def test_bad_pool_requests_raise_clear_errors(tmp_path) -> None:
    with pytest.raises(CliplensError, match="words, descriptions, imagenet, shapes"):
        get_pool("colours")
    with pytest.raises(CliplensError, match="positive integer"):
        get_pool("descriptions", size=0)
    with pytest.raises(CliplensError, match="has only 998"):
        get_pool("imagenet", size=1001)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \t\n", encoding="utf-8")
    with pytest.raises(CliplensError, match="no non-empty lines"):
        read_pool(empty)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CliplensError, match="UTF-8"):
        read_pool(binary)


# --- templates -----------------------------------------------------------------------------------------------------


def test_openai_templates_are_80_format_strings_matching_open_clip() -> None:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    templates = resolve_templates("openai")
    assert len(templates) == 80 == len(set(templates))
    for template, original in zip(templates, OPENAI_IMAGENET_TEMPLATES):
        assert template.count("{}") == 1 and template.count("{") == 1 and template.count("}") == 1
        assert template.format("red fox") == original("red fox")
    assert len(resolve_templates("simple")) == 7
    assert resolve_templates("none") == ("{}",)
    assert resolve_templates("photo") == ("a photo of a {}.",)
    assert resolve_templates(["a {} here", "{}!"]) == ("a {} here", "{}!")


@pytest.mark.parametrize("bad", ["openAI", ["a {} and {}"], ["no placeholder"], ["{0} {}"], [], [3]])
def test_bad_templates_raise_clear_errors(bad) -> None:
    with pytest.raises(CliplensError):
        resolve_templates(bad)


# --- embeddings ----------------------------------------------------------------------------------------------------

TEXTS = ["red", "a dog on a beach", "{braces} stay literal", "tiny", "striped"]


def test_embeddings_are_unit_float32_rows_and_match_the_literal_oracle(tmp_path) -> None:
    lens = FakeLens()
    embeddings = embed_texts(lens, TEXTS, cache_dir=tmp_path)
    assert embeddings.shape == (len(TEXTS), 12) and embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.double().norm(dim=-1), torch.ones(len(TEXTS), dtype=torch.float64), atol=UNIT_ATOL)
    assert torch.allclose(embeddings.double(), literal_template_average(lens, TEXTS, ("{}",)), atol=UNIT_ATOL)
    assert lens.prompts[: len(TEXTS)] == TEXTS  # braces inside a text are not interpreted


@pytest.mark.parametrize("batch_size, calls", [(1, 3), (16, 2), (256, 1)])  # 8 templates: 1, 2 or 3 texts a call
def test_template_average_equals_a_literal_loop_and_the_zero_shot_classifier(batch_size: int, calls: int) -> None:
    lens = FakeLens(dim=9, seed=3)
    templates = resolve_templates("simple") + ("{}",)
    texts = ["cat", "harbor at night", "seven blue circles"]
    averaged = template_average(lens.encode_text, texts, templates, batch_size)
    assert lens.calls == calls
    assert torch.allclose(averaged.double(), literal_template_average(lens, texts, templates), atol=UNIT_ATOL)
    assert torch.allclose(averaged, classifier(lens.encode_text, texts, templates).T, atol=UNIT_ATOL)


def test_cache_hit_returns_identical_tensors_without_encoding(tmp_path) -> None:
    lens = FakeLens()
    first = embed_texts(lens, TEXTS, templates="simple", cache_dir=tmp_path, batch_size=4)
    calls = lens.calls
    assert calls > 0
    again = embed_texts(lens, TEXTS, templates="simple", cache_dir=tmp_path)
    assert lens.calls == calls
    assert torch.equal(again, first)
    assert cache_path(lens, TEXTS, "simple", tmp_path).is_dir()


@pytest.mark.parametrize(
    "change",
    [
        lambda lens, texts: (FakeLens(fingerprint="fake-b"), texts, "none"),
        lambda lens, texts: (FakeLens(precision="fp16-autocast"), texts, "none"),
        lambda lens, texts: (lens, texts[::-1], "none"),
        lambda lens, texts: (lens, texts, "photo"),
    ],
)
def test_cache_key_covers_model_precision_text_order_and_templates(tmp_path, change) -> None:
    lens = FakeLens()
    embed_texts(lens, TEXTS, cache_dir=tmp_path)
    other_lens, texts, templates = change(lens, TEXTS)
    calls = other_lens.calls
    embed_texts(other_lens, texts, templates=templates, cache_dir=tmp_path)
    assert other_lens.calls > calls
    assert cache_path(other_lens, texts, templates, tmp_path) != cache_path(lens, TEXTS, "none", tmp_path)


def test_an_entry_made_for_another_model_is_refused(tmp_path) -> None:
    made_for, asked_by = FakeLens(fingerprint="fake-a"), FakeLens(fingerprint="fake-b")
    embed_texts(made_for, TEXTS, cache_dir=tmp_path)
    shutil.move(cache_path(made_for, TEXTS, "none", tmp_path), cache_path(asked_by, TEXTS, "none", tmp_path))
    with pytest.raises(CliplensError, match=r"made with fake-clip \(fingerprint fake-a\)"):
        embed_texts(asked_by, TEXTS, cache_dir=tmp_path)
    assert asked_by.calls == 0


def test_bad_embedding_requests_raise_clear_errors(tmp_path) -> None:
    lens = FakeLens()
    with pytest.raises(CliplensError, match="at least one text"):
        embed_texts(lens, [], cache_dir=tmp_path)
    with pytest.raises(CliplensError, match="non-empty string"):
        embed_texts(lens, ["cat", " "], cache_dir=tmp_path)
    with pytest.raises(CliplensError, match="batch_size"):
        embed_texts(lens, ["cat"], cache_dir=tmp_path, batch_size=0)
    assert lens.calls == 0


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CLIPLENS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "text"
    monkeypatch.delenv("CLIPLENS_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "cliplens", "text")
