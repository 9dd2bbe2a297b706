"""Tests for cnnwidgets.core.embedding: features, t-SNE/PCA maps, neighbours, mosaics."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.core.embedding import (
    EMBEDDING_METHODS,
    Stopped,
    check_features,
    default_feature_layer,
    effective_perplexity,
    embed,
    extract_features,
    mosaic,
    mosaic_cells,
    neighbors,
    pca_2d,
    pixel_neighbors,
    tsne,
    umap_2d,
)

from ..conftest import hook_count, requires_grad_flags, training_flags


def clusters(n_per: int = 100, d: int = 50, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated Gaussian clusters (centres 20 apart per axis, std 1) and their labels."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(20.0 * c, 1.0, (n_per, d)) for c in range(k)]).astype(np.float32)
    return x, np.repeat(np.arange(k), n_per)


def knn_accuracy(y: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN classification accuracy in the embedding."""
    d2 = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nn_idx = np.argsort(d2, axis=1)[:, :k]
    votes = labels[nn_idx]
    pred = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in votes])
    return float((pred == labels).mean())


# ---------------------------------------------------------------- neighbors
def test_neighbors_on_a_line_ties_in_index_order():
    x = np.array([[0.0], [3.0], [1.0], [-1.0], [2.0], [-2.0], [5.0]])
    # distances from point 0: 3, 1, 1, 2, 2, 5
    out = neighbors(x, 0, k=3)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [2, 3, 4])
    np.testing.assert_array_equal(neighbors(x, 0, k=100), [2, 3, 4, 5, 1, 6])
    np.testing.assert_array_equal(neighbors(x, 6, k=2), [1, 4])


def test_neighbors_known_distances_2d_and_duplicates():
    x = np.array([[0, 0], [3, 4], [0, 0], [1, 1], [6, 8], [-3, 4]], dtype=np.float32)
    # from point 0: 5, 0 (duplicate), sqrt 2, 10, 5
    np.testing.assert_array_equal(neighbors(x, 0, k=8), [2, 3, 1, 5, 4])
    np.testing.assert_array_equal(neighbors(x, 2, k=1), [0])


def test_neighbors_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 20)).astype(np.float32)
    d = np.linalg.norm(x.astype(np.float64) - x[17].astype(np.float64), axis=1)
    d[17] = np.inf
    np.testing.assert_array_equal(neighbors(x, 17, k=10), np.argsort(d, kind="stable")[:10])
    assert 17 not in neighbors(x, 17, k=499)
    assert len(neighbors(torch.from_numpy(x), 0, k=8)) == 8


def test_neighbors_rejects_bad_index_and_k():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"index must be in 0\.\.3, got 4"):
        neighbors(x, 4)
    with pytest.raises(ValueError, match="index must be in"):
        neighbors(x, -1)
    with pytest.raises(TypeError, match="bool"):
        neighbors(x, True)
    with pytest.raises(ValueError, match="k must be at least 1"):
        neighbors(x, 0, k=0)


def test_pixel_neighbors_uses_float_differences():
    imgs = np.stack([np.full((4, 4, 1), v, np.uint8) for v in (0, 255, 10, 3, 250)])
    # with uint8 arithmetic 0 - 255 would wrap to 1 and make image 1 the nearest
    np.testing.assert_array_equal(pixel_neighbors(imgs, 0, k=4), [3, 2, 4, 1])
    np.testing.assert_array_equal(pixel_neighbors(imgs, 1, k=2), [4, 2])
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
    np.testing.assert_array_equal(pixel_neighbors(t, 0, k=4), [3, 2, 4, 1])


# ---------------------------------------------------------------- check_features
def test_check_features_counts_bad_values_and_rows():
    x = np.ones((5, 3))
    x[1, 0] = np.nan
    x[1, 2] = np.inf
    x[3, 1] = -np.inf
    with pytest.raises(ValueError, match=r"3 NaN/Inf values in 2 of 5 rows \(rows 1, 3\)"):
        check_features(x)
    out = check_features(torch.ones(4, 2, dtype=torch.float64))
    assert out.dtype == np.float32 and out.shape == (4, 2)
    with pytest.raises(ValueError, match=r"2-D \(N, D\)"):
        check_features(np.ones(5))
    with pytest.raises(ValueError, match="empty"):
        check_features(np.ones((0, 3)))


# ---------------------------------------------------------------- PCA
def low_rank(n: int, d: int, seed: int) -> np.ndarray:
    """Data with a clear spectrum: singular values 40, 20, then 1-sized noise."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.normal(size=(n, 2)))[0]
    v = np.linalg.qr(rng.normal(size=(d, 2)))[0]
    return (u @ np.diag([40.0, 20.0]) @ v.T * np.sqrt(n) + rng.normal(size=(n, d)) + 3.0).astype(np.float32)


@pytest.mark.parametrize(("n", "d"), [(200, 10), (300, 600)])  # exact covariance path, randomized path
def test_pca_matches_numpy_svd_up_to_sign(n, d):
    x = low_rank(n, d, seed=d)
    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    ref = u[:, :2] * s[:2]
    p = pca_2d(x)
    assert p.dtype == np.float32 and p.shape == (n, 2)
    for j in range(2):
        sign = np.sign(p[:, j] @ ref[:, j])
        np.testing.assert_allclose(p[:, j] * sign, ref[:, j], rtol=1e-4, atol=1e-3 * s[j] / np.sqrt(n))


def test_pca_sign_is_fixed_and_rows_permute():
    x = low_rank(100, 8, seed=1)
    perm = np.random.default_rng(0).permutation(100)
    np.testing.assert_allclose(pca_2d(x)[perm], pca_2d(x[perm]), atol=1e-4)
    one_d = pca_2d(np.array([[1.0], [2.0], [4.0]]))
    np.testing.assert_allclose(one_d, [[-4 / 3, 0], [-1 / 3, 0], [5 / 3, 0]], atol=1e-6)


# ---------------------------------------------------------------- t-SNE
def test_tsne_separates_three_clusters():
    x, labels = clusters()
    y = tsne(x, perplexity=30, n_iter=500)
    assert y.dtype == np.float32 and y.shape == (300, 2)
    assert knn_accuracy(y, labels) == 1.0
    # every cluster is tighter than the gap between cluster centres
    centres = np.stack([y[labels == c].mean(0) for c in range(3)])
    spread = max(np.linalg.norm(y[labels == c] - centres[c], axis=1).max() for c in range(3))
    gap = min(np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3))
    assert gap > 2 * spread


def test_tsne_same_seed_same_result():
    x, _ = clusters(n_per=40, d=10)
    a = tsne(x, perplexity=10, n_iter=200, seed=3, initialization="random")
    b = tsne(x, perplexity=10, n_iter=200, seed=3, initialization="random")
    c = tsne(x, perplexity=10, n_iter=200, seed=4, initialization="random")
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_tsne_callback_iterations_and_positions():
    x, _ = clusters(n_per=30, d=10)
    calls: list[tuple[int, np.ndarray]] = []

    def cb(iteration, positions):
        calls.append((iteration, positions))

    y = tsne(x, perplexity=10, n_iter=150, callback=cb, callback_every=25)
    # early exaggeration = 150 // 3 = 50 iterations, then 100: one count across both phases
    assert [i for i, _ in calls] == [25, 50, 75, 100, 125, 150]
    for _, p in calls:
        assert p.dtype == np.float32 and p.shape == (90, 2)
    assert not np.allclose(calls[0][1], calls[-1][1])  # copies: the map moved between calls
    assert y.shape == (90, 2) and np.isfinite(y).all()


def test_tsne_callback_returning_true_stops_and_exceptions_propagate():
    x, _ = clusters(n_per=30, d=10)
    seen: list[int] = []
    last: dict[str, np.ndarray] = {}

    def stop_at_50(iteration, positions):
        seen.append(iteration)
        last["p"] = positions
        return iteration >= 50

    y = tsne(x, perplexity=10, n_iter=300, callback=stop_at_50, callback_every=10)
    assert seen == [10, 20, 30, 40, 50]
    np.testing.assert_allclose(y, last["p"], rtol=1e-6)

    def boom(iteration, positions):
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        tsne(x, perplexity=10, n_iter=100, callback=boom)


def test_tsne_lowers_perplexity_for_few_points():
    x, _ = clusters(n_per=7, d=5)  # N = 21 -> perplexity at most 20 / 3
    with pytest.warns(UserWarning, match=r"perplexity 30 is too large for 21 points.*using 6\.667"):
        y = tsne(x, perplexity=30, n_iter=100)
    assert y.shape == (21, 2) and np.isfinite(y).all()
    with pytest.warns(UserWarning, match="using 1.333"):
        assert tsne(x[:5], n_iter=50).shape == (5, 2)


def test_effective_perplexity_value_does_not_warn(recwarn):
    assert effective_perplexity(21, 30) == pytest.approx(20 / 3)
    assert effective_perplexity(91, 30) == 30.0 and effective_perplexity(90, 30) == pytest.approx(89 / 3)
    x, _ = clusters(n_per=7, d=5)
    tsne(x, perplexity=effective_perplexity(len(x), 30), n_iter=50)
    assert not [w for w in recwarn.list if issubclass(w.category, UserWarning)]


def test_tsne_rejects_few_points_and_bad_values():
    with pytest.raises(ValueError, match="at least 5 points, got 4"):
        tsne(np.random.default_rng(0).normal(size=(4, 3)))
    x, _ = clusters(n_per=10, d=4)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/Inf values in 1 of 30 rows"):
        tsne(x)
    with pytest.raises(ValueError, match="perplexity must be a positive number"):
        tsne(clusters(n_per=10, d=4)[0], perplexity=0)


# ---------------------------------------------------------------- umap / embed
def test_umap_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError
    with pytest.raises(ImportError, match="pip install umap-learn"):
        umap_2d(np.ones((10, 3)))


def test_embed_dispatch():
    x = low_rank(50, 6, seed=2)
    np.testing.assert_array_equal(embed(x, "pca"), pca_2d(x))
    with pytest.raises(ValueError, match=r"'tsne', 'pca', 'umap'.*'mds'"):
        embed(x, "mds")
    assert EMBEDDING_METHODS == ("tsne", "pca", "umap")


# ---------------------------------------------------------------- mosaic
def test_mosaic_cells_corners_and_collisions():
    np.testing.assert_array_equal(mosaic_cells([[0, 0], [1, 0], [0, 1], [1, 1]], 2), [[2, 3], [0, 1]])
    # all at one spot: first point on the nearest cell, the others on the next free ones (row-major ties)
    np.testing.assert_array_equal(mosaic_cells(np.zeros((3, 2)), 2), [[0, 1], [2, -1]])
    cells = mosaic_cells(np.random.default_rng(0).normal(size=(10, 2)))
    assert cells.shape == (4, 4) and sorted(cells[cells >= 0]) == list(range(10))
    # only G*G of N points get a cell
    assert (mosaic_cells(np.random.default_rng(1).normal(size=(10, 2)), 2) >= 0).sum() == 4


def test_mosaic_cells_places_points_nearest_their_cell_first():
    # anchors fix the range to the unit square; p3 is nearer the centre of the top-left cell than p2,
    # so p3 takes it although p2 comes first by index, and p2 moves to the nearest free cell
    pos = [[0, 0], [1, 1], [0.45, 0.75], [0.3, 0.8]]
    np.testing.assert_array_equal(mosaic_cells(pos, 2), [[3, 2], [0, 1]])


def slow_cells(positions: np.ndarray, g: int) -> np.ndarray:
    """mosaic_cells written from its documented rule with a full scan of the free cells."""
    lo, hi = positions.min(0), positions.max(0)
    unit = (positions - lo) / np.where(hi > lo, hi - lo, 1)
    unit[:, hi == lo] = 0.5
    point = np.stack([(1 - unit[:, 1]) * g, unit[:, 0] * g], axis=1)  # (row, col) in cell units
    centres = [(r + 0.5, c + 0.5) for r in range(g) for c in range(g)]  # row-major
    d2 = lambda p, q: (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2  # noqa: E731
    own = [min(d2(p, q) for q in centres) for p in point]
    cells = np.full((g, g), -1)
    free = set(range(g * g))
    for i in sorted(range(len(point)), key=lambda i: (own[i], i)):
        if not free:
            break
        best = min(free, key=lambda k: (d2(point[i], centres[k]), k))
        free.remove(best)
        cells[best // g, best % g] = i
    return cells


@pytest.mark.parametrize(("n", "g"), [(150, None), (150, 8), (60, 12)])
def test_mosaic_cells_matches_full_scan_reference(n, g):
    rng = np.random.default_rng(n + (g or 0))
    pos = np.concatenate([rng.normal(5.0 * c, 1.0, (n // 3, 2)) for c in range(3)])  # crowded clusters
    expected = slow_cells(pos, g or int(np.ceil(np.sqrt(n))))
    np.testing.assert_array_equal(mosaic_cells(pos, g), expected)


def test_mosaic_places_images_and_fills_background():
    h, w = 3, 2
    imgs = np.stack([np.full((h, w, 3), 10 * (i + 1), np.uint8) for i in range(4)])
    out = mosaic(imgs, [[0, 0], [1, 0], [0, 1], [1, 1]], grid=2)
    assert out.dtype == np.uint8 and out.shape == (2 * h, 2 * w, 3)
    cell = lambda r, c: out[r * h : (r + 1) * h, c * w : (c + 1) * w]  # noqa: E731
    assert (cell(0, 0) == 30).all() and (cell(0, 1) == 40).all()  # top row: y = 1
    assert (cell(1, 0) == 10).all() and (cell(1, 1) == 20).all()

    # two images at opposite corners of a 3 x 3 grid; the rest is background
    two = mosaic(imgs[:2], [[0, 0], [1, 1]], grid=3, background=(1, 2, 3))
    assert two.shape == (9, 6, 3)
    expect = np.empty_like(two)
    expect[...] = (1, 2, 3)
    expect[6:9, 0:2] = 10  # (0, 0) -> bottom-left cell
    expect[0:3, 4:6] = 20  # (1, 1) -> top-right cell
    np.testing.assert_array_equal(two, expect)

    alone = mosaic(imgs[:1, :, :, :1], [[5.0, -2.0]], grid=3)  # a single point maps to the middle
    expect = np.full((9, 6, 1), 255, np.uint8)
    expect[3:6, 2:4] = 10
    np.testing.assert_array_equal(alone, expect)


def test_mosaic_default_grid_and_errors():
    imgs = np.zeros((10, 4, 4), np.uint8)  # N x H x W taken as C = 1
    assert mosaic(imgs, np.random.default_rng(0).normal(size=(10, 2))).shape == (16, 16, 1)
    with pytest.raises(TypeError, match="uint8"):
        mosaic(imgs.astype(np.float32), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="one per image"):
        mosaic(imgs, np.zeros((9, 2)))
    with pytest.raises(ValueError, match="NaN/Inf"):
        mosaic(imgs, np.full((10, 2), np.nan))


# ---------------------------------------------------------------- features
class TupleOut(nn.Module):
    def forward(self, x):
        return x, x


def test_default_feature_layer_demo_and_resnet(demo, tiny_resnet, rgb_batch, nested_cnn):
    assert default_feature_layer(demo.model) == "classifier.3"
    assert default_feature_layer(demo.model, demo.images[:1]) == "classifier.3"
    # fc takes torch.flatten(avgpool(x)): no module outputs that tensor, the last to finish is avgpool
    assert default_feature_layer(tiny_resnet) == "avgpool"
    assert default_feature_layer(tiny_resnet, rgb_batch) == "avgpool"
    assert hook_count(tiny_resnet) == 0
    # with an example, the latest layer whose output is the Linear's input: here the container
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), nn.Linear(2 * 6 * 6, 3))
    assert default_feature_layer(net, torch.zeros(1, 1, 8, 8)) == "0"
    assert default_feature_layer(net) == "0.1"
    with pytest.raises(ValueError, match="no nn.Linear"):
        default_feature_layer(nested_cnn)


def test_extract_features_default_layer_equals_direct(demo):
    model, x = demo.model, demo.images[:70]
    f = extract_features(model, x, batch_size=32)
    assert f.dtype == np.float32 and f.shape == (70, 70)
    with torch.no_grad():
        ref = model.classifier[:4](model.features(x)).numpy()
    np.testing.assert_allclose(f, ref, rtol=1e-5, atol=1e-5)


def test_extract_features_flatten_vs_avg(demo):
    model, x = demo.model, demo.images[:40]
    flat = extract_features(model, x, "features.6")
    avg = extract_features(model, x, "features.6", pool="avg")
    assert flat.shape == (40, 128 * 3 * 3) and avg.shape == (40, 128)
    with torch.no_grad():
        maps = model.features[:7](x)
    np.testing.assert_allclose(flat, maps.flatten(1).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(avg, maps.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(avg, flat.reshape(40, 128, 9).mean(-1), rtol=1e-5, atol=1e-5)
    # uint8 images with mean/std give the same features as the normalized floats
    u8 = np.round((x[:, 0].numpy() * demo.std[0] + demo.mean[0]) * 255).astype(np.uint8)[..., None]
    f8 = extract_features(model, u8, "features.6", pool="avg", mean=demo.mean, std=demo.std)
    np.testing.assert_allclose(f8, avg, rtol=1e-4, atol=1e-4)


def test_extract_features_progress_stop_and_state(demo):
    model = demo.model.train()
    flags, grads = training_flags(model), requires_grad_flags(model)
    calls = []
    extract_features(model, demo.images[:60], batch_size=25, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(25, 60), (50, 60), (60, 60)]
    assert training_flags(model) == flags and requires_grad_flags(model) == grads and hook_count(model) == 0

    checks = iter([False, True])
    with pytest.raises(Stopped) as info:
        extract_features(model, demo.images[:60], batch_size=25, should_stop=lambda: next(checks), cache=False)
    assert (info.value.done, info.value.total) == (25, 60)
    assert training_flags(model) == flags and hook_count(model) == 0
    model.eval()


def test_extract_features_errors(demo):
    with pytest.raises(ValueError, match=r"'nope' is not in the model"):
        extract_features(demo.model, demo.images[:4], "nope")
    with pytest.raises(ValueError, match="pool must be"):
        extract_features(demo.model, demo.images[:4], "features.6", pool="max")
    net = nn.Sequential(nn.Conv2d(1, 2, 3), TupleOut())
    with pytest.raises(ValueError, match=r"layer '1' outputs a tuple, not a tensor"):
        extract_features(net, torch.zeros(3, 1, 8, 8), "1")
    assert hook_count(net) == 0
