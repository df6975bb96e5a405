"""Tests for visgen.losses: reconstruction, hinge GAN + LeCam, PatchGAN, LPIPS.

LPIPS runs on random weights in the documented `.npz` layout (no pretrained
file is needed). When torch is installed, LPIPS is also checked against a
plain-torch LPIPS forward on the same weights, and the converter on random
torch state dicts.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import import_crosscheck
from flax import nnx

from visgen.losses import (
    LPIPS,
    Frozen,
    LeCamEMA,
    LeCamStat,
    PatchDiscriminator,
    gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    load_lpips,
    lpips_npz_keys,
    reconstruction_loss,
)
from visgen.losses.perceptual import LPIPS_SCALE, LPIPS_SHIFT, VGG16_STAGES, VGG16_WIDTHS

SMALL_WIDTHS = (4, 8, 8, 16, 16)


def _rngs(seed: int = 0) -> nnx.Rngs:
    # XLA:CPU takes ~10 s to compile threefry per shape on these machines; the
    # rbg generator compiles in well under a second and is fine for tests.
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _images(seed: int, shape=(2, 16, 16, 3)) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def _leaves(state: nnx.State) -> list:
    return jax.tree.leaves(state)


# ---------------------------------------------------------------- reconstruction


@pytest.mark.parametrize(
    "kind, ref",
    [
        ("l1", lambda d: np.abs(d).mean()),
        ("l2", lambda d: (d**2).mean()),
        ("l1+l2", lambda d: np.abs(d).mean() + (d**2).mean()),
    ],
)
def test_reconstruction_kinds_match_numpy(kind, ref):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 8, 8, 3)).astype(np.float32)
    y = rng.uniform(-1, 1, (2, 3, 8, 8, 3)).astype(np.float32)
    got = reconstruction_loss(jnp.asarray(x), jnp.asarray(y), kind)
    assert got.shape == ()
    np.testing.assert_allclose(got, ref(x.astype(np.float64) - y), rtol=1e-6)


def test_reconstruction_errors():
    x = jnp.zeros((2, 4, 4, 3))
    with pytest.raises(ValueError, match="valid kinds: l1, l2, l1\\+l2"):
        reconstruction_loss(x, x, "l3")
    with pytest.raises(ValueError, match="equal shapes"):
        reconstruction_loss(x, jnp.zeros((2, 4, 4, 1)))


# ---------------------------------------------------------------- GAN losses


def test_hinge_losses_hand_values():
    real = jnp.array([2.0, 0.5, -1.0])
    fake = jnp.array([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2] -> 1.
    np.testing.assert_allclose(hinge_d_loss(real, fake), 0.5 * (5 / 6 + 1), rtol=1e-6)
    np.testing.assert_allclose(hinge_g_loss(fake), 1 / 3, rtol=1e-6)


def test_lecam_update_and_loss_hand_values():
    lecam = LeCamEMA(decay=0.9)
    lecam.update(jnp.array([1.0, 3.0]), jnp.array([-1.0, -1.0]))
    # ema = 0.9 * 0 + 0.1 * mean: real 0.2, fake -0.1.
    np.testing.assert_allclose(lecam.ema_real[...], 0.2, rtol=1e-6)
    np.testing.assert_allclose(lecam.ema_fake[...], -0.1, rtol=1e-6)
    real, fake = jnp.array([0.5, -0.5]), jnp.array([0.0, 0.5])
    # relu(real + 0.1) = [.6, 0] -> .18; relu(0.2 - fake) = [.2, 0] -> .02.
    np.testing.assert_allclose(lecam.loss(real, fake), 0.2, rtol=1e-5)

    lecam.update(jnp.array([2.0]), jnp.array([1.0]))
    np.testing.assert_allclose(lecam.ema_real[...], 0.9 * 0.2 + 0.1 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(lecam.ema_fake[...], 0.9 * -0.1 + 0.1 * 1.0, atol=1e-7)


def test_lecam_eval_freezes_and_jit_mutates():
    lecam = LeCamEMA(decay=0.5)

    @nnx.jit
    def step(m, r, f):
        m.update(r, f)

    step(lecam, jnp.ones((2, 3)), -jnp.ones((2, 3)))
    np.testing.assert_allclose(lecam.ema_real[...], 0.5)
    lecam.eval()
    step(lecam, jnp.ones((2, 3)), -jnp.ones((2, 3)))
    np.testing.assert_allclose(lecam.ema_real[...], 0.5)
    assert _leaves(nnx.state(lecam, nnx.Param)) == []
    assert len(_leaves(nnx.state(lecam, LeCamStat))) == 2


def test_gan_weight_under_jit():
    f = jax.jit(lambda step: gan_weight(step, start_step=10, weight=0.1))
    assert float(f(jnp.int32(0))) == 0.0
    assert float(f(jnp.int32(9))) == 0.0
    np.testing.assert_allclose(f(jnp.int32(10)), 0.1)
    np.testing.assert_allclose(f(jnp.int32(1000)), 0.1)


# ---------------------------------------------------------------- discriminator


def test_patch_discriminator_shapes_and_params():
    disc = PatchDiscriminator(3, base_channels=8, num_layers=3, rngs=_rngs())
    apply = nnx.jit(lambda d, x: d(x))
    # 32 -> 16 -> 8 -> 4 (stride 2 convs) -> 3 -> 2 (stride 1 convs), as in torch.
    assert apply(disc, _images(0, (2, 32, 32, 3))).shape == (2, 2, 2)
    video = _images(1, (2, 3, 32, 32, 3))
    out = apply(disc, video)
    assert out.shape == (2, 3, 2, 2)
    # Frames are scored independently.
    np.testing.assert_allclose(out[:, 1], apply(disc, video[:, 1]), rtol=1e-5, atol=1e-6)
    all_leaves, params = _leaves(nnx.state(disc)), _leaves(nnx.state(disc, nnx.Param))
    assert len(params) == len(all_leaves) > 0


def test_discriminator_and_lecam_under_optimizer():
    """An optimizer over `nnx.Param` trains the discriminator, never the EMAs."""
    import optax

    class Critic(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.disc = PatchDiscriminator(3, 8, 2, rngs=rngs)
            self.lecam = LeCamEMA(0.9)

    critic = Critic(_rngs())
    opt = nnx.Optimizer(critic, optax.sgd(0.1), wrt=nnx.Param)
    real = _images(0)
    fake = -real

    @nnx.jit
    def train_step(critic, opt, real, fake):
        def loss_fn(critic):
            lr, lf = critic.disc(real), critic.disc(fake)
            return hinge_d_loss(lr, lf) + 0.001 * critic.lecam.loss(lr, lf), (lr, lf)

        grads, (lr, lf) = nnx.grad(loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)(
            critic
        )
        opt.update(critic, grads)
        critic.lecam.update(lr, lf)

    before = critic.disc.head.kernel[...]
    train_step(critic, opt, real, fake)
    assert not np.allclose(before, critic.disc.head.kernel[...])
    assert float(critic.lecam.ema_real[...]) != 0.0


# ---------------------------------------------------------------- LPIPS


def _random_lpips_weights(widths: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays in the `.npz` layout; He-scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    out, cin = {}, 3
    for k, (stage, width) in enumerate(zip(VGG16_STAGES, widths, strict=True)):
        for name in stage:
            std = np.sqrt(2.0 / (9 * cin))
            out[f"{name}.kernel"] = rng.normal(0, std, (3, 3, cin, width)).astype(np.float32)
            out[f"{name}.bias"] = rng.normal(0, 0.05, (width,)).astype(np.float32)
            cin = width
        out[f"lin{k}.weight"] = np.abs(rng.normal(0, 0.1, (width,))).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def lpips_npz(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("lpips") / "lpips_small.npz"
    np.savez(path, **_random_lpips_weights(SMALL_WIDTHS))
    return str(path)


def test_lpips_npz_layout_is_documented_keys():
    assert sorted(_random_lpips_weights(SMALL_WIDTHS)) == sorted(lpips_npz_keys())
    assert len(lpips_npz_keys()) == 13 * 2 + 5


def test_lpips_distance_properties(lpips_npz):
    lpips = load_lpips(lpips_npz)
    dist = nnx.jit(lambda m, x, y: m(x, y))
    x, y = _images(0), _images(1)
    np.testing.assert_allclose(dist(lpips, x, x), np.zeros(2), atol=1e-7)
    d = dist(lpips, x, y)
    assert d.shape == (2,) and bool(jnp.all(d > 0))
    np.testing.assert_allclose(d, dist(lpips, y, x), rtol=1e-6)
    video = jnp.stack([x, y], axis=1)
    dv = dist(lpips, video, jnp.stack([y, y], axis=1))
    assert dv.shape == (2, 2)
    np.testing.assert_allclose(dv[:, 0], d, rtol=1e-5)
    np.testing.assert_allclose(dv[:, 1], 0.0, atol=1e-7)


def test_lpips_gradients_reach_input_not_weights(lpips_npz):
    lpips = load_lpips(lpips_npz)
    assert _leaves(nnx.state(lpips, nnx.Param)) == []
    assert len(_leaves(nnx.state(lpips, Frozen))) == len(lpips_npz_keys())
    x, y = _images(0), _images(1)
    graphdef, frozen = nnx.split(lpips)
    loss = lambda x, s: jnp.sum(nnx.merge(graphdef, s)(x, y))
    g, wgrad = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, frozen)
    assert g.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    # Even differentiating w.r.t. the frozen variables explicitly gives exact zeros.
    assert all(float(jnp.abs(w).max()) == 0.0 for w in _leaves(wgrad))


def test_lpips_missing_file_and_bad_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)nope.npz.*python -m evals.convert_lpips"):
        load_lpips(str(tmp_path / "nope.npz"))
    weights = _random_lpips_weights(SMALL_WIDTHS)
    weights["lin2.weight"] = -weights["lin2.weight"]
    with pytest.raises(ValueError, match="lin2.weight has negative"):
        LPIPS(weights)
    del weights["conv3_3.bias"]
    with pytest.raises(ValueError, match="conv3_3.bias"):
        LPIPS(weights)


# torchvision's VGG16 `features`, written out independently of the converter:
# ints are 3x3 convs (each followed by a ReLU), "M" 2x2 max pools.
_TV_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# lpips' slices end after features[3], [8], [15], [22], [29]: relu1_2 ... relu5_3.
_LPIPS_TAPS = (3, 8, 15, 22, 29)


def _tv_layers(widths: tuple[int, ...]) -> list[tuple[str, int]]:
    """`(kind, features index)` for each layer, the conv widths scaled to `widths`."""
    stage_widths = iter(widths)
    width, layers = next(stage_widths), []
    for v in _TV_VGG16:
        if v == "M":
            layers.append(("pool", len(layers)))
            width = next(stage_widths)
        else:
            layers += [(f"conv{width}", len(layers)), ("relu", len(layers) + 1)]
    return layers


def _torch_state_dicts(widths: tuple[int, ...], torch) -> tuple[dict, dict]:
    """Random torchvision-VGG16 and lpips-lin state dicts (torch layouts)."""
    arrays = _random_lpips_weights(widths, seed=3)
    names = iter(n for stage in VGG16_STAGES for n in stage)
    vgg = {}
    for kind, idx in _tv_layers(widths):
        if kind.startswith("conv"):
            name = next(names)
            kernel = arrays[f"{name}.kernel"].transpose(3, 2, 0, 1).copy()
            vgg[f"features.{idx}.weight"] = torch.from_numpy(kernel)
            vgg[f"features.{idx}.bias"] = torch.from_numpy(arrays[f"{name}.bias"])
    vgg["classifier.0.weight"] = torch.zeros(4, 4)  # present in the real file, unused
    lins = {
        f"lin{k}.model.1.weight": torch.from_numpy(arrays[f"lin{k}.weight"]).reshape(1, -1, 1, 1)
        for k in range(5)
    }
    return vgg, lins


def _torch_lpips(vgg: dict, lins: dict, widths: tuple[int, ...], x, y, torch):
    """The lpips package's v0.1 VGG forward, written with plain torch ops."""
    functional = torch.nn.functional
    shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)

    def features(h):
        h, feats = (h - shift) / scale, []
        for kind, idx in _tv_layers(widths):
            if kind == "pool":
                h = functional.max_pool2d(h, 2, 2)
            elif kind == "relu":
                h = functional.relu(h)
            else:
                w, b = vgg[f"features.{idx}.weight"], vgg[f"features.{idx}.bias"]
                h = functional.conv2d(h, w, b, padding=1)
            if idx in _LPIPS_TAPS:
                feats.append(h)
        return feats

    def norm(f):
        return f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + 1e-10)

    total = 0
    for k, (a, b) in enumerate(zip(features(x), features(y), strict=True)):
        diff = (norm(a) - norm(b)) ** 2
        total = total + functional.conv2d(diff, lins[f"lin{k}.model.1.weight"]).mean(dim=(2, 3))
    return total.reshape(-1)


def test_lpips_matches_torch_reference(tmp_path):
    torch = import_crosscheck(
        "torch", "torch not installed (pip install torch==2.13.0) for the LPIPS cross-check"
    )
    from evals.convert_lpips import convert

    # Real VGG16 widths, so the full-size layout loads too.
    vgg, lins = _torch_state_dicts(VGG16_WIDTHS, torch)
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lins, tmp_path / "vgg.pth")
    convert(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg.pth"), str(tmp_path / "out.npz"))
    lpips = load_lpips(str(tmp_path / "out.npz"))
    x, y = _images(0, (2, 33, 40, 3)), _images(1, (2, 33, 40, 3))  # odd size: floor pooling
    ours = np.asarray(nnx.jit(lambda m, x, y: m(x, y))(lpips, x, y))
    with torch.no_grad():
        to_torch = lambda a: torch.from_numpy(np.asarray(a).transpose(0, 3, 1, 2).copy())
        ref = _torch_lpips(vgg, lins, VGG16_WIDTHS, to_torch(x), to_torch(y), torch).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


def test_converter_round_trips_torch_state_dicts(tmp_path):
    torch = import_crosscheck(
        "torch", "torch not installed (pip install torch==2.13.0) for the converter test"
    )
    from evals.convert_lpips import convert

    vgg, lins = _torch_state_dicts(SMALL_WIDTHS, torch)
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lins, tmp_path / "vgg.pth")
    out = tmp_path / "lpips"  # no extension: the path must be kept as given
    convert(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg.pth"), str(out))
    expected = _random_lpips_weights(SMALL_WIDTHS, seed=3)
    with np.load(out) as data:
        assert sorted(data.files) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(data[key], value, err_msg=key)
