"""The GAN recipe: budget, selection, conditional training and serving, quality measures.
Tiny networks on a few real icons, so each test runs in seconds on one thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from workers.generation.image import ImageGenerator  # noqa: E402
from workers.training import gan, gan_metrics, gan_models, gan_modes, gan_recipe  # noqa: E402
from workers.training.build.image_generator import (  # noqa: E402
    TAGS,
    load_openmoji_tagged,
    openmoji_tag,
)
from workers.training.generators import choose_tags  # noqa: E402

TINY = gan.GANConfig(ngf=8, ndf=8, batch_size=8, fid_samples=16, eval_samples=8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tagged_icons() -> tuple[list[Any], list[str]]:
    images, tags = load_openmoji_tagged(limit=24)
    return images, tags


@pytest.fixture(scope="module")
def conditional_model(
    tmp_path_factory: pytest.TempPathFactory, tagged_icons: tuple[list[Any], list[str]]
) -> Path:
    images, _ = tagged_icons
    models = tmp_path_factory.mktemp("models")
    labels = [i % 3 for i in range(len(images))]
    gan.train_image_generator(
        images, models, "cg", "1", steps=3, labels=labels, label_names=["a", "b", "c"],
        config=TINY,
    )  # fmt: skip
    return models / "cg" / "1"


def test_budget_alone_stops_training(tmp_path: Path, tagged_icons: Any) -> None:
    # However fast or slow the machine, a 0.5 s budget ends the run after at least one step.
    m = gan.train_image_generator(
        tagged_icons[0], tmp_path, "ig", "1", budget_s=0.5, config=TINY
    ).metrics
    assert m["steps"] >= 1 and m["budget_s"] == 0.5
    assert m["selection"], "the final EMA is scored even when the budget ends the run early"


def test_steps_cap_the_budget_and_selection_runs_at_eval_points(
    tmp_path: Path, tagged_icons: Any
) -> None:
    events: list[dict[str, Any]] = []
    m = gan.train_image_generator(
        tagged_icons[0], tmp_path, "ig", "1", steps=4, budget_s=3600, config=TINY,
        progress=events.append,
    ).metrics  # fmt: skip
    assert m["steps"] == 4
    # eval_at (0.5, 0.7, 0.85, 1.0) of 4 steps: after steps 2, 3 and 4 (0.85 and 1.0 at once).
    assert [h["step"] for h in m["selection"]] == [2, 3, 4]
    assert m["selected_step"] in (2, 3, 4)
    assert [e["step"] for e in events if e["event"] == "eval"] == [2, 3, 4]
    for key in ("fid", "precision", "recall", "fid_real_train", "precision_real_train"):
        assert np.isfinite(m[key])


def test_needs_steps_or_budget(tmp_path: Path, tagged_icons: Any) -> None:
    with pytest.raises(ValueError, match="steps, budget_s"):
        gan.train_image_generator(tagged_icons[0], tmp_path, "ig", "1", config=TINY)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        gan.train_image_generator(tagged_icons[0], tmp_path, "ig", "1", steps=0, config=TINY)
    with pytest.raises(ValueError, match="budget_s must be positive"):
        gan.train_image_generator(tagged_icons[0], tmp_path, "ig", "1", budget_s=0, config=TINY)
    with pytest.raises(ValueError, match="label_names"):
        gan.train_image_generator(
            tagged_icons[0], tmp_path, "ig", "1", steps=1, labels=[0] * 24, config=TINY
        )


def test_conditional_model_serves_tags(conditional_model: Path) -> None:
    gen = ImageGenerator(conditional_model)
    assert gen.tags == ["a", "b", "c"]
    assert gen.manifest.metrics["onnx_max_abs_diff"] < 1e-4
    assert any(i.startswith("label[batch] int64") for i in gen.manifest.inputs)
    tagged = gen.generate(4, seed=3, tag="b")
    assert len(tagged) == 4 and tagged[0].size == (64, 64)
    # Untagged requests draw a tag per image from (seed, index): prefixes still agree.
    a, b = gen.generate(3, seed=9), gen.generate(6, seed=9)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b[:3], strict=True))
    assert gen.labels(1, seed=9, tag="c").tolist() == [2]
    with pytest.raises(ValueError, match="unknown tag"):
        gen.generate(1, seed=1, tag="zebra")
    walk = gen.interpolate(1, 2, 3, tag="a")
    assert len(walk) == 3


def test_model_without_tags_refuses_a_tag(tmp_path: Path, tagged_icons: Any) -> None:
    gan.train_image_generator(tagged_icons[0], tmp_path, "ig", "1", steps=1, config=TINY)
    gen = ImageGenerator(tmp_path / "ig" / "1")
    assert gen.tags == [] and len(gen.generate(2, seed=1)) == 2
    with pytest.raises(ValueError, match="trained without tags"):
        gen.generate(2, seed=1, tag="face")


def test_conditional_onnx_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = gan_models.Generator(16, 8, num_classes=4, class_dim=8)
    g.apply(gan_models.init_weights)
    assert gan.export_onnx(g, tmp_path / "g.onnx") < 1e-4


def test_conditional_batch_norm_generator_uses_label_and_z(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = gan_models.Generator(16, 8, num_classes=3, cond_bn=True)
    g.apply(gan_models.init_weights)
    # Give each class its own gains, as training would; at init they are all ones.
    with torch.no_grad():
        for norm in g.norms:
            norm.gain.weight.uniform_(0.5, 1.5)
    g.eval()
    z = torch.randn(2, 16)
    with torch.no_grad():
        a = g(z, torch.tensor([0, 0]))
        b = g(z, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)  # the class steers the image
    assert not torch.allclose(a[0], a[1])  # and z still does within one class
    assert g.embed is None and not hasattr(g, "net")
    assert gan.export_onnx(g, tmp_path / "g.onnx") < 1e-4
    with pytest.raises(ValueError, match="label"):
        g(z)
    # The upsampling last layer (an option) exports too, conditional or not.
    for classes in (0, 3):
        up = gan_models.Generator(16, 8, num_classes=classes, cond_bn=True, upsample_rgb=True)
        up.apply(gan_models.init_weights)
        assert gan.export_onnx(up, tmp_path / f"up{classes}.onnx") < 1e-4


def test_projection_discriminator_uses_the_label() -> None:
    torch.manual_seed(0)
    d = gan_models.Discriminator(8, True, num_classes=3)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        s0 = d(x, torch.tensor([0, 0]))
        s1 = d(x, torch.tensor([1, 1]))
    assert s0.shape == (2,) and not torch.allclose(s0, s1)


def test_augmentations_keep_shape_and_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 3, 64, 64) * 2 - 1).requires_grad_()
    y = gan_models.augment(x, gan_models.AUGMENTS, 0.125, 0.25, g)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    cut = gan_models.cutout(torch.ones(2, 3, 64, 64), 0.25, g)
    assert ((cut == 0).float().mean(dim=(1, 2, 3)) <= 16 * 16 / 64 / 64 + 1e-6).all()
    assert (cut == 0).any()


def test_learning_rate_decays_over_the_last_part() -> None:
    cfg = gan.GANConfig(decay_from=0.5)
    assert gan.lr_scale(cfg, 0.2) == 1.0
    assert gan.lr_scale(cfg, 0.75) == pytest.approx(0.5)
    assert gan.lr_scale(cfg, 1.0) == 0.0


def test_tag_temper_gives_small_tags_more_of_the_draws() -> None:
    labels = torch.tensor([0] * 900 + [1] * 100)
    g = torch.Generator().manual_seed(0)

    def share_of_small_tag(temper: float) -> float:
        draw = gan_recipe.batch_sampler(gan.GANConfig(tag_temper=temper), labels, len(labels))
        idx = draw(20_000, g)
        assert idx.min() >= 0 and idx.max() < len(labels)
        return float((labels[idx] == 1).float().mean())

    assert share_of_small_tag(1.0) == pytest.approx(0.1, abs=0.01)  # as in the data
    assert share_of_small_tag(0.5) == pytest.approx(10 / 40, abs=0.015)  # sqrt(100)/(30+10)
    assert share_of_small_tag(0.0) == pytest.approx(0.5, abs=0.015)  # every tag alike
    # Without labels the draws are uniform whatever the temper.
    draw = gan_recipe.batch_sampler(gan.GANConfig(tag_temper=0.0), None, 10)
    assert torch.bincount(draw(10_000, g), minlength=10).min() > 800
    with pytest.raises(ValueError, match="tag_temper"):
        gan_recipe.check_inputs(gan.GANConfig(tag_temper=1.5), 1, None, 8, None, None)


def test_precision_recall_and_concept_share() -> None:
    rng = np.random.default_rng(0)
    real = rng.standard_normal((200, 8))
    p, r = gan_metrics.precision_recall(real, real.copy())
    assert p == 1.0 and r == 1.0
    p, r = gan_metrics.precision_recall(real, real + 50.0)
    assert p == 0.0 and r == 0.0
    # Mode collapse: every fake on one real point is precise but recalls little.
    p, r = gan_metrics.precision_recall(real, np.repeat(real[:1], 200, axis=0))
    assert p == 1.0 and r < 0.2
    assert gan_metrics.concept_share(["cat", "dog", "car"], ["cat", "car"]) == pytest.approx(2 / 3)
    assert gan_metrics.concept_share(None, ["cat"]) is None
    # Collapsed onto the common label: the share says 1, the overlap only that label's share.
    assert gan_metrics.concept_share(["cat"] * 4, ["cat", "dog", "car", "cup"]) == 1.0
    assert gan_metrics.concept_overlap(["cat"] * 4, ["cat", "dog", "car", "cup"]) == 0.25
    assert gan_metrics.concept_overlap(["a", "b"], ["b", "a"]) == 1.0


def test_choose_tags() -> None:
    tags = [{"animal", "cat"}] * 20 + [{"animal", "dog"}] * 20 + [{"animal"}] * 5 + [{"car"}] * 3
    labels, names = choose_tags(tags, min_items=16)
    # "animal" qualifies, but every image with it has a rarer tag but five, so it drops out.
    assert names == ["cat", "dog"]
    assert labels == [0] * 20 + [1] * 20 + [None] * 8
    assert choose_tags([{"a"}] * 20, min_items=16) == (None, None)


def test_openmoji_tags() -> None:
    assert openmoji_tag(Path("1F600.svg")) == "face"
    assert openmoji_tag(Path("1F1E9-1F1EA.svg")) == "flag"
    assert openmoji_tag(Path("1F468-200D-1F373.svg")) == "person"
    assert openmoji_tag(Path("2B06.svg")) == "symbol"
    # A woman lifting weights: her name ends in FEMALE SIGN, yet she is a person, not a sign.
    assert openmoji_tag(Path("1F3CB-FE0F-200D-2640-FE0F.svg")) == "person"
    assert openmoji_tag(Path("1F46E.svg")) == "person"  # POLICE OFFICER
    assert openmoji_tag(Path("2640.svg")) == "symbol"  # the female sign itself
    # The rest by Unicode's emoji group.
    assert openmoji_tag(Path("1F34E.svg")) == "food"  # RED APPLE
    assert openmoji_tag(Path("1F415.svg")) == "nature"  # DOG
    assert openmoji_tag(Path("1F680.svg")) == "travel"  # ROCKET
    assert openmoji_tag(Path("26BD.svg")) == "activity"  # SOCCER BALL
    assert openmoji_tag(Path("1F4F1.svg")) == "object"  # MOBILE PHONE
    assert openmoji_tag(Path("1F493.svg")) == "symbol"  # BEATING HEART (Smileys & Emotion)
    assert openmoji_tag(Path("1F440.svg")) == "person"  # EYES (People & Body)
    assert openmoji_tag(Path("1FAB7.svg")) == "nature"  # LOTUS, newer than the table
    # OpenMoji's extras by their block's subgroup.
    assert openmoji_tag(Path("E000.svg")) == "nature"  # goldfish
    assert openmoji_tag(Path("E0C4.svg")) == "food"  # pomegranate
    assert openmoji_tag(Path("E280.svg")) == "face"  # exhausted face
    assert openmoji_tag(Path("E040.svg")) == "extra"  # a brand
    assert openmoji_tag(Path("E24E.svg")) == "extra"  # a UI element
    assert len(set(TAGS)) == 10


def test_minibatch_std_channel_measures_the_batch_spread() -> None:
    same = torch.ones(8, 4, 2, 2)
    spread = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 4, 2, 2)
    flat = gan_models.minibatch_std(same)
    varied = gan_models.minibatch_std(spread)
    assert flat.shape == varied.shape == (8, 5, 2, 2)
    assert torch.equal(flat[:, :4], same)
    assert flat[:, 4].max() < 1e-3  # identical images: no spread for D to see
    assert varied[:, 4].min() > 1.0
    # A batch that does not split into groups of 4 is one group.
    assert gan_models.minibatch_std(torch.rand(3, 4, 2, 2)).shape == (3, 5, 2, 2)


@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_recipe_options_train_and_export(tmp_path: Path, tagged_icons: Any, amp: str) -> None:
    cfg = gan.GANConfig(
        ngf=8, ndf=8, batch_size=8, fid_samples=16, eval_samples=8, amp=amp, mbstd=True,
        feature_match=1.0, channels_last=amp == "bf16",
    )  # fmt: skip
    m = gan.train_image_generator(tagged_icons[0], tmp_path, "ig", "1", steps=4, config=cfg)
    assert m.metrics["steps"] == 4 and np.isfinite(m.metrics["fid"])
    assert m.metrics["onnx_max_abs_diff"] < 1e-4  # exported from float32 weights either way
    images = ImageGenerator(tmp_path / "ig" / "1").generate(2, seed=1)
    assert len(images) == 2 and images[0].size == (64, 64)


def test_unknown_precision_is_refused(tmp_path: Path, tagged_icons: Any) -> None:
    with pytest.raises(ValueError, match="amp"):
        gan.train_image_generator(
            tagged_icons[0], tmp_path, "ig", "1", steps=1, config=gan.GANConfig(amp="fp8")
        )


def test_modes_split_each_tag_into_thumbnail_clusters() -> None:
    # Tag 0: 8 red and 8 blue images; tag 1: 8 green ones. Four modes shared out by size.
    colours = [(1.0, -1.0, -1.0)] * 8 + [(-1.0, -1.0, 1.0)] * 8 + [(-1.0, 1.0, -1.0)] * 8
    images = torch.tensor(colours).view(24, 3, 1, 1).expand(24, 3, 64, 64).clone()
    images += 0.01 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    tags = torch.tensor([0] * 16 + [1] * 8)
    modes, mode_tag = gan_modes.split_modes(images, tags, 4, seed=0)
    assert mode_tag == [0, 0, 0, 1]  # 16/24 of 4 modes -> 3 for tag 0, 1 for tag 1
    # Each mode holds images of one tag, and of one colour: no mode mixes red and blue.
    for m in range(4):
        assert {int(t) for t in tags[modes == m]} == {mode_tag[m]}
        members = (modes == m).nonzero().view(-1)
        assert (members < 8).all() or (members >= 8).all()
    # Few images: at most one mode per 4 images, at least one per tag; untagged is one tag.
    few, few_tags = gan_modes.split_modes(images[:8], None, 10, seed=0)
    assert few_tags == [0, 0] and set(few.tolist()) <= {0, 1}
    with pytest.raises(ValueError):
        gan_modes.split_modes(images, tags, 0, seed=0)
    # A floor per tag: the green tag gets two modes of its eight images, not one.
    floored, floored_tags = gan_modes.split_modes(images, tags, 4, seed=0, min_per_tag=2)
    assert floored_tags == [0, 0, 0, 1, 1]
    assert set(floored[tags == 1].tolist()) == {3, 4}


def test_self_conditioned_model_draws_modes_of_the_asked_tag(
    tmp_path: Path, tagged_icons: Any
) -> None:
    images, _ = tagged_icons
    labels = [0] * 12 + [1] * 12
    cfg = gan.GANConfig(ngf=8, ndf=8, batch_size=8, fid_samples=16, eval_samples=8, mode_size=4)
    m = gan.train_image_generator(
        images, tmp_path, "mg", "1", steps=2, labels=labels, label_names=["a", "b"], config=cfg
    )
    modes = m.preprocessing["modes"]
    assert m.preprocessing["tags"] == ["a", "b"]
    assert len(modes["tag"]) == len(modes["counts"]) >= 2 and set(modes["tag"]) == {0, 1}
    assert any("preprocessing.modes" in i for i in m.inputs)
    gen = ImageGenerator(tmp_path / "mg" / "1")
    of_b = {i for i, t in enumerate(modes["tag"]) if t == 1}
    assert set(gen.labels(32, seed=3, tag="b").tolist()) <= of_b
    drawn = gen.labels(64, seed=3)
    assert drawn is not None and len(set(drawn.tolist())) > 1  # untagged: any mode
    assert gen.labels(3, seed=3).tolist() == drawn[:3].tolist()  # prefix property
    assert len(gen.generate(2, seed=1, tag="a")) == 2
    with pytest.raises(ValueError, match="unknown tag"):
        gen.generate(1, seed=1, tag="zebra")


class _ColourPerLabel(torch.nn.Module):
    """A stand-in generator that draws a flat image of its label's colour, plus noise from z:
    conditioning that works perfectly, to check that the per-tag measures say so."""

    latent = 4

    def __init__(self, colours: torch.Tensor) -> None:
        super().__init__()
        self.colours = colours
        self.num_classes = len(colours)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        base = self.colours[label].view(-1, 3, 1, 1).expand(-1, 3, 64, 64)
        return (base + 0.1 * z[:, :3, None, None]).clamp(-1, 1)


def test_per_tag_measures_see_working_conditioning() -> None:
    colours = torch.tensor([(1.0, -1.0, -1.0), (-1.0, 1.0, -1.0), (-1.0, -1.0, 1.0)])
    g = torch.Generator().manual_seed(0)

    def images(tags: torch.Tensor) -> torch.Tensor:
        base = colours[tags].view(-1, 3, 1, 1).expand(-1, 3, 64, 64)
        return (base + 0.1 * torch.randn(len(tags), 3, 1, 1, generator=g)).clamp(-1, 1)

    train_tags = torch.arange(90) % 3
    heldout_tags = torch.arange(30) % 3
    m = gan_metrics.quality_metrics(
        _ColourPerLabel(colours), images(train_tags), images(heldout_tags),  # type: ignore[arg-type]
        gan_metrics.embed_only(gan_metrics.fallback_embed), 60, seed=0,
        train_labels=train_tags, heldout_labels=heldout_tags, label_names=["r", "g", "b"],
    )  # fmt: skip
    rows = {r["tag"]: r for r in m["per_tag"]}
    assert set(rows) == {"r", "g", "b"}
    for r in rows.values():
        assert r["heldout_images"] == 10 and r["train_images"] == 30
        # With the tag every image is of the tag; with random tags about a third.
        assert r["tag_match"] == 1.0 and r["tag_match_random"] < 0.6
        assert r["fid_tag"] < r["fid_random_tags"]
        assert r["fid_tag_train"] < r["fid_random_tags_train"]


@pytest.mark.parametrize("twin", [False, True])
def test_auxiliary_tag_classifier_teaches_g_the_asked_tag(twin: bool) -> None:
    # Two tags that differ only in colour: D's auxiliary head learns them from real images, and
    # G, asked for a tag, draws images that head assigns to that tag (with the twin classifier
    # of G's images too, which only subtracts the pull towards the tag's likeliest image).
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = gan.GANConfig(ngf=8, ndf=8, batch_size=16, aux_tag=1.0, aux_twin=twin, amp="off")
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(32, 3, 64, 64)
    blue = torch.tensor([-1.0, -1.0, 1.0]).view(1, 3, 1, 1).expand(32, 3, 64, 64)
    data = torch.cat([red, blue]) + 0.1 * torch.randn(64, 3, 64, 64, generator=g)
    tags = torch.tensor([0] * 32 + [1] * 32)
    gen = gan_models.Generator(cfg.latent, 8, num_classes=2, cond_bn=True, upsample_rgb=True)
    disc = gan_models.Discriminator(8, False, num_classes=2, num_tags=2, twin=twin)
    gen.apply(gan_models.init_weights)
    disc.apply(gan_models.init_weights)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    # 120 steps: at 60 the twin variant's fakes were told apart 28 times of 32 on one host's
    # float arithmetic and every time on another; at 120, every time on four seeds on the first.
    for _ in range(120):
        idx = torch.randint(0, 64, (16,), generator=g)
        y_fake = torch.randint(0, 2, (16,), generator=g)
        losses = gan_recipe.train_step(
            cfg, gen, disc, opt_g, opt_d, data[idx], torch.randn(16, cfg.latent, generator=g),
            tags[idx], y_fake, g, ("translation",), amp=False, t_real=tags[idx], t_fake=y_fake,
        )  # fmt: skip
    assert losses["cls_real"] < 0.2
    assert ("cls_twin" in losses) == twin
    gen.eval()
    asked = torch.tensor([0, 1] * 16)
    with torch.no_grad():
        fakes = gen(torch.randn(32, cfg.latent, generator=g), asked)
        _, pooled = disc.score_and_features(fakes, asked)
        assert disc.classify is not None
        got = disc.classify(pooled).argmax(1)
    assert (got == asked).float().mean() > 0.9
    # Red images for tag 0 and blue for tag 1: the tag shows in the pixels, not only in D. The
    # twin keeps each tag's spread, so the tails of the two may touch (they did on one thread):
    # the typical images are compared, not the extremes.
    red_minus_blue = (fakes[:, 0] - fakes[:, 2]).mean((1, 2))
    red_of_0, red_of_1 = red_minus_blue[asked == 0], red_minus_blue[asked == 1]
    assert red_of_0.median() - red_of_1.median() > 0.5
    assert (red_of_0 > red_of_1.median()).float().mean() >= 0.8


def test_auxiliary_loss_skips_the_tags_weighted_zero(tagged_icons: Any, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    cfg = gan.GANConfig(ngf=8, ndf=8, batch_size=8, aux_tag=1.0, amp="off")
    gen = gan_models.Generator(cfg.latent, 8, num_classes=2, cond_bn=True, upsample_rgb=True)
    disc = gan_models.Discriminator(8, False, num_classes=2, num_tags=2)
    opt_g = torch.optim.Adam(gen.parameters())
    opt_d = torch.optim.Adam(disc.parameters())
    real = torch.rand(8, 3, 64, 64, generator=g) * 2 - 1
    tags = torch.tensor([0, 1] * 4)

    def cls_fake(asked: torch.Tensor, weights: list[float]) -> float:
        return gan_recipe.train_step(
            cfg, gen, disc, opt_g, opt_d, real, torch.randn(8, cfg.latent, generator=g), tags,
            asked, g, (), amp=False, t_real=tags, t_fake=asked, aux_weights=torch.tensor(weights),
        )["cls_fake"]  # fmt: skip

    assert cls_fake(torch.ones(8, dtype=torch.long), [1.0, 0.0]) == 0.0  # every fake skipped
    assert cls_fake(torch.ones(8, dtype=torch.long), [0.0, 1.0]) > 0.0
    # The build names the skipped tags; a name that is not a tag is refused before training.
    with pytest.raises(ValueError, match="aux_skip"):
        gan.train_image_generator(
            tagged_icons[0], tmp_path, "ig", "1", steps=1, labels=[0] * 12 + [1] * 12,
            label_names=["a", "b"], config=gan.GANConfig(aux_tag=1.0, aux_skip=("zebra",)),
        )  # fmt: skip
