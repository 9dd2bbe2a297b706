"""Every view over the user's own data: a folder of PNGs laid out by class, a Dataset with a
transform, a DataLoader, a list of PIL images; read on demand, with labels and class names from
the data, and results equal to the in-memory answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnwidgets import ActivationExplorer, Explorer, OIPOptimizer, SaliencyViewer, TSNEScatter
from cnnwidgets.core.activations import top_images
from cnnwidgets.core.images import ImageSet

N = 40


@pytest.fixture(scope="module")
def digits():
    from cnnwidgets import demo

    d = demo.mnist("val")
    s = ImageSet(d.images[:N], mean=d.mean, std=d.std)
    pix = np.stack([s.display(i)[..., 0] for i in range(N)])  # uint8 N x 28 x 28
    return d, pix, np.asarray(d.labels[:N])


@pytest.fixture
def folder(tmp_path, digits):
    d, pix, labels = digits
    root = tmp_path / "digits"
    for i, (im, y) in enumerate(zip(pix, labels)):
        (root / f"digit{y}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(root / f"digit{y}" / f"{i:03d}.png")
    order = sorted(range(N), key=lambda i: (f"digit{labels[i]}", i))
    return root, np.asarray(order)


class Digits(torch.utils.data.Dataset):
    def __init__(self, pix, labels):
        self.pix, self.labels = pix, labels
        self.classes = [str(i) for i in range(10)]

    def __len__(self):
        return len(self.pix)

    def __getitem__(self, i):
        return Image.fromarray(self.pix[i]), int(self.labels[i])


def _to_tensor(im, mean=0.1307, std=0.3081):
    return ((torch.from_numpy(np.asarray(im)).float() / 255 - mean) / std)[None]


def test_activation_explorer_on_a_folder_finds_the_in_memory_top_images(digits, folder):
    d, pix, labels = digits
    root, order = folder
    ex = ActivationExplorer(d.model, str(root), mean=d.mean, std=d.std)
    try:
        assert ex.n_images == N
        present = sorted({int(y) for y in labels})
        assert ex._images.classes == [f"digit{y}" for y in present]
        ex.index = 3
        ex.wait()
        assert ex._image_info["label"] == f"digit{labels[order[3]]}"
        got = ex.top_images("features.3", 2, k=5)
        want, _ = top_images(d.model, ImageSet(pix[order][..., None], mean=d.mean, std=d.std), "features.3", 2, k=5)
        assert got.tolist() == want.tolist()
    finally:
        ex.close()


def test_a_broken_file_shows_in_the_view(digits, folder):
    d, _, _ = digits
    root, _ = folder
    bad = sorted(root.rglob("*.png"))[5]
    bad.write_bytes(b"broken")
    ex = ActivationExplorer(d.model, str(root), mean=d.mean, std=d.std)
    try:
        ex.channel = 1
        ex.request_top_images()
        ex.wait(120)
        assert "1 image could not be read" in ex.model_note and bad.name in ex.model_note
        assert 5 not in ex._top_info["indices"] and len(ex._top_info["indices"]) == 9
    finally:
        ex.close()


def test_saliency_viewer_on_a_dataset_with_a_transform(digits):
    d, pix, labels = digits
    sv = SaliencyViewer(d.model, Digits(pix, labels), method="vanilla", transform=_to_tensor, mean=d.mean, std=d.std)
    ref = SaliencyViewer(d.model, ImageSet(pix[..., None], mean=d.mean, std=d.std), labels, d.classes,
                         method="vanilla", mean=d.mean, std=d.std)
    try:
        for v in (sv, ref):
            v.index = 7
            v.wait()
        assert sv._image_meta["label"] == str(labels[7])
        np.testing.assert_allclose(sv.heatmap(), ref.heatmap(), rtol=1e-4, atol=1e-6)
    finally:
        sv.close()
        ref.close()


def test_tsne_scatter_on_a_loader_learns_labels_and_sends_thumbnails(digits):
    d, pix, labels = digits
    loader = torch.utils.data.DataLoader(Digits(pix, labels), batch_size=16)
    ts = TSNEScatter(d.model, loader, method="pca", transform=_to_tensor, mean=d.mean, std=d.std)
    try:
        assert ts.wait(120)
        assert ts.phase == "done"
        np.testing.assert_array_equal(np.asarray(ts._labels), labels)  # read from the items on the way
        thumbs = np.asarray(ts._thumbnails)
        assert thumbs.shape == (N, 28, 28, 1)
        np.testing.assert_array_equal(thumbs[..., 0], pix)
        assert ts.neighbors(0, 3, "pixel").shape == (3,)  # pixel space: the thumbnails
        ref = TSNEScatter(d.model, ImageSet(pix[..., None], mean=d.mean, std=d.std), labels, method="pca")
        assert ref.wait(120)
        np.testing.assert_allclose(ts.features, ref.features, rtol=1e-4, atol=1e-5)
        ref.close()
    finally:
        ts.close()


def test_oip_optimizer_starts_from_a_pil_image(digits):
    d, pix, _ = digits
    opt = OIPOptimizer(d.model, images=[Image.fromarray(p) for p in pix[:4]], mean=d.mean, std=d.std)
    try:
        assert opt.n_images == 4
    finally:
        opt.close()


def test_explorer_on_a_folder_shares_one_image_set(digits, folder):
    d, _, labels = digits
    root, order = folder
    ex = Explorer(d.model, str(root), mean=d.mean, std=d.std, tsne_images=30)
    try:
        assert ex.activations._images is ex.saliency._images  # one reader, one cache
        assert ex.activations.n_images == N
        assert ex.tsne.wait(120)
        np.testing.assert_array_equal(np.asarray(ex.tsne._labels), (labels[order][:30]))
    finally:
        ex.close()
