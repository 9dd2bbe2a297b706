"""Bring your own data: ImageSet over datasets, loaders, folders, PIL and path lists; streamed,
cached, resumable passes (core.passes); memory bounded by the cache and the batch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnwidgets.core import passes
from cnnwidgets.core.activations import channel_stats, top_images
from cnnwidgets.core.embedding import extract_features
from cnnwidgets.core.images import ImageSet
from cnnwidgets.core.passes import Stopped, model_fingerprint

from ..conftest import view_pre_hook


def _devices() -> list[str]:
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def _images(n: int = 24, size: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 N x H x W x 3 images with structure (a bright square at a random place)."""
    rng = np.random.default_rng(seed)
    out = (rng.random((n, size, size, 3)) * 60).astype(np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 5, 2)
        out[i, y : y + 5, x : x + 5, i % 3] = 255
    return out


def _folder(tmp_path, imgs: np.ndarray, classes=("cat", "dog")) -> tuple:
    root = tmp_path / "data"
    labels = []
    for i, im in enumerate(imgs):
        c = classes[i % len(classes)]
        (root / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(root / c / f"{i:04d}.png")
        labels.append(i % len(classes))
    # the folder's order: by class, then by file name
    order = sorted(range(len(imgs)), key=lambda i: (i % len(classes), i))
    return root, order, np.asarray(labels)[order]


class _PILDataset(torch.utils.data.Dataset):
    """Items (PIL image, label), like torchvision's datasets before a transform."""

    classes = ["a", "b", "c"]

    def __init__(self, imgs: np.ndarray) -> None:
        self.imgs = imgs

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, i: int):
        return Image.fromarray(self.imgs[i]), i % 3


def _to_tensor(im) -> torch.Tensor:
    """A transform: PIL image -> float C x H x W in [0, 1], normalized (as ToTensor + Normalize)."""
    return (torch.from_numpy(np.asarray(im)).permute(2, 0, 1).float() / 255 - 0.5) / 0.25


# ---------------------------------------------------------------------------- reading


def test_every_kind_of_input_gives_the_same_batches(tmp_path):
    imgs = _images()
    ref = ImageSet(imgs, mean=0.5, std=0.25)
    want = ref.batch(0, len(imgs))
    root, order, folder_labels = _folder(tmp_path, imgs)
    paths = [root / ("cat", "dog")[i % 2] / f"{i:04d}.png" for i in range(len(imgs))]
    kinds = {
        "dataset+transform": ImageSet(_PILDataset(imgs), transform=_to_tensor, mean=0.5, std=0.25),
        "dataset (PIL items)": ImageSet(_PILDataset(imgs), mean=0.5, std=0.25),
        "loader": ImageSet(torch.utils.data.DataLoader(_PILDataset(imgs), batch_size=5), mean=0.5, std=0.25),
        "PIL list": ImageSet([Image.fromarray(im) for im in imgs], mean=0.5, std=0.25),
        "paths": ImageSet(paths, mean=0.5, std=0.25),
    }
    for name, s in kinds.items():
        assert len(s) == len(imgs), name
        got = torch.cat([b.x for b in s.batches(batch_size=7)])
        torch.testing.assert_close(got, want, msg=name)
        np.testing.assert_array_equal(s.display(3), imgs[3], err_msg=name)
    folder = ImageSet(str(root), mean=0.5, std=0.25)
    torch.testing.assert_close(folder.batch(0, len(imgs)), want[order])
    assert folder.classes == ["cat", "dog"]
    np.testing.assert_array_equal(folder.labels, folder_labels)  # known without reading an image
    assert kinds["loader"].batch_size == 5
    # labels and class names from a dataset's items, learned as a pass reads them
    ds = ImageSet(_PILDataset(imgs), transform=_to_tensor)
    assert ds.classes == ["a", "b", "c"] and ds.has_labels and ds.labels is None
    for _ in ds.batches():
        pass
    np.testing.assert_array_equal(ds.labels, np.arange(len(imgs)) % 3)


def test_a_shuffling_loader_keeps_one_order_and_workers_read_the_same():
    imgs = _images(30)
    ds = _PILDataset(imgs)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3))
    s = ImageSet(loader, transform=_to_tensor)
    order = s._order
    assert sorted(order.tolist()) == list(range(30)) and order.tolist() != list(range(30))
    torch.testing.assert_close(s.item(0)[0], _to_tensor(Image.fromarray(imgs[order[0]])))
    assert s.label(0) == order[0] % 3
    plain = torch.cat([b.x for b in s.batches()])
    workers = ImageSet(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2), transform=_to_tensor)
    assert workers.num_workers == 2
    batches = list(workers.batches())
    assert [len(b.indices) for b in batches] == [4] * 7 + [2]
    torch.testing.assert_close(torch.cat([b.x for b in batches]), torch.stack([_to_tensor(Image.fromarray(i)) for i in imgs]))
    assert plain.shape == (30, 3, 16, 16)


def test_bad_inputs_name_the_item_and_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="holds no images"):
        ImageSet(str(tmp_path))
    with pytest.raises(ValueError, match="is not a folder"):
        ImageSet(str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="IterableDataset"):
        ImageSet(torch.utils.data.DataLoader(_Iterable()))

    class Strings(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return "not an image"

    with pytest.raises(ValueError, match=r"image 0 \(.*\) is not an image Pillow can read"):
        ImageSet(Strings())

    class Ints(Strings):
        def __getitem__(self, i):
            return np.zeros((4, 4), np.int32)

    with pytest.raises(TypeError, match=r"image 0 .*ndarray.*expected a float tensor.*Hint: pass transform="):
        ImageSet(Ints())
    sizes = [_images(1, 16)[0], _images(1, 20)[0]]
    with pytest.raises(ValueError, match=r"image 1 .* is 3x20x20 but the first image is 3x16x16; pass size="):
        ImageSet([Image.fromarray(a) for a in sizes]).batch(0, 2)
    resized = ImageSet([Image.fromarray(a) for a in sizes], size=12)
    assert resized.batch(0, 2).shape == (2, 3, 12, 12)
    with pytest.raises(ValueError, match="size must be a positive int"):
        ImageSet([Image.fromarray(a) for a in sizes], size=0)
    with pytest.raises(TypeError, match="transform must be a callable"):
        ImageSet(_PILDataset(_images(3)), transform="resize")


class _Iterable(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield torch.zeros(3, 4, 4)


def test_a_broken_file_is_skipped_and_counted(tmp_path):
    imgs = _images(12)
    root, order, _ = _folder(tmp_path, imgs)
    bad = root / "dog" / "0003.png"
    bad.write_bytes(b"this is not a png")
    s = ImageSet(str(root), mean=0.5, std=0.25)
    net = _net()
    idx, _ = top_images(net, s, "3", 2, k=12)
    broken = [i for i, p in enumerate(s._paths) if p == bad]
    assert list(s.broken) == broken and "0003.png" in s.broken[broken[0]]
    assert broken[0] not in idx.tolist() and len(idx) == 11  # ranked without it
    with pytest.raises(ValueError, match="0003.png"):
        s.item(broken[0])


# ---------------------------------------------------------------------------- passes


def test_top_images_over_a_dataset_equal_the_in_memory_answer():
    imgs = _images(40)
    net = _net()
    x = ImageSet(imgs, mean=0.5, std=0.25).batch(0, 40)
    with torch.no_grad():
        maps = net[:5](x)[:, 3].flatten(1).amax(1)
    want = torch.argsort(maps, descending=True, stable=True)[:6].tolist()
    ds = ImageSet(_PILDataset(imgs), transform=_to_tensor)
    idx, scores = top_images(net, ds, "4", 3, k=6, batch_size=9)
    assert idx.tolist() == want
    np.testing.assert_allclose(scores, maps[want].numpy(), rtol=1e-5, atol=1e-6)
    st = channel_stats(net, ds, "4")
    assert st.max.shape == (40, 8) and st.valid.all()


def test_a_pass_is_cached_and_a_weight_change_invalidates_it():
    imgs = _images(30)
    net = _net()
    s = ImageSet(_PILDataset(imgs), transform=_to_tensor)
    calls = []
    top_images(net, s, "3", 1, k=3, batch_size=10, progress=lambda d, t: calls.append(d))
    assert calls == [10, 20, 30]
    calls.clear()
    first = top_images(net, s, "3", 5, k=3, progress=lambda d, t: calls.append(d))  # another channel: no pass
    assert calls == [30]
    # the disk copy serves a new session (the in-memory results dropped)
    passes._memory.clear()
    calls.clear()
    again = top_images(net, s, "3", 5, k=3, progress=lambda d, t: calls.append(d))
    assert calls == [30] and again[0].tolist() == first[0].tolist()
    fp = model_fingerprint(net)
    with torch.no_grad():  # "training": an in-place update of the weights
        net[3].weight.mul_(-1.0)
    assert model_fingerprint(net) != fp
    calls.clear()
    changed = top_images(net, s, "3", 5, k=3, batch_size=10, progress=lambda d, t: calls.append(d))
    assert calls == [10, 20, 30]  # computed afresh
    x = torch.stack([_to_tensor(Image.fromarray(i)) for i in imgs])
    with torch.no_grad():
        want = torch.argsort(net[:4](x)[:, 5].flatten(1).amax(1), descending=True, stable=True)[:3]
    assert changed[0].tolist() == want.tolist()


def test_a_stopped_pass_resumes_where_it_stopped():
    imgs = _images(50)
    net = _net()
    s = ImageSet(_PILDataset(imgs), transform=_to_tensor)
    stop = threading.Event()
    calls = []

    def progress(d, t):
        calls.append(d)
        if d >= 20:
            stop.set()

    with pytest.raises(Stopped) as info:
        extract_features(net, s, "5", batch_size=10, progress=progress, should_stop=stop.is_set)
    assert info.value.done == 20
    calls.clear()
    feats = extract_features(net, s, "5", batch_size=10, progress=lambda d, t: calls.append(d))
    assert calls == [20, 30, 40, 50]  # from image 20 on
    x = torch.stack([_to_tensor(Image.fromarray(i)) for i in imgs])
    with torch.no_grad():
        np.testing.assert_allclose(feats, net[:6](x).flatten(1).numpy(), rtol=1e-5, atol=1e-6)


def test_cache_off_keeps_results_in_memory(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNW_CACHE_DIR", "off")
    assert passes.cache_dir() is None
    net = _net()
    s = ImageSet(_images(10), mean=0.5, std=0.25)
    top_images(net, s, "3", 0, k=2)
    assert not (tmp_path / "cnnw-cache").exists()


@pytest.mark.parametrize("device", _devices())
def test_passes_run_on_the_models_device(device):
    net = _net().to(device)
    s = ImageSet(_PILDataset(_images(20)), transform=_to_tensor)
    seen = []
    hook = view_pre_hook(net[0], lambda m, a: seen.append(a[0].device.type))
    try:
        feats = extract_features(net, s, "6", cache=False)
    finally:
        hook.remove()
    assert set(seen) == {torch.device(device).type} and feats.shape == (20, 8)
    idx, _ = top_images(net, s, "4", 1, k=4, cache=False)
    assert idx.shape == (4,)


# ---------------------------------------------------------------------------- memory

_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from torch import nn
    from cnnwidgets.core.activations import top_images
    n = int(sys.argv[1])

    class Random(torch.utils.data.Dataset):
        def __len__(self):
            return n
        def __getitem__(self, i):
            g = np.random.default_rng(i)
            return (g.random((64, 64, 3)) * 255).astype(np.uint8), i % 10

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    idx, _ = top_images(net, Random(), "3", 2, k=9, batch_size=128, mean=0.5, std=0.25)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kb": before, "after_kb": after, "top": idx.tolist()}))
""")


def test_peak_memory_of_a_pass_does_not_grow_with_the_data_set(tmp_path):
    """20,000 images of 3 x 64 x 64 are 937 MiB as float32; the pass over them adds about what a
    pass over 2,000 adds (a batch, not the data: a pass reads each image once and does not fill
    the image cache), measured as the peak RSS of a fresh process."""
    out = {}
    for n in (2000, 20000):
        r = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(n)], capture_output=True, text=True, timeout=600,
                           env={**__import__("os").environ, "CNNW_CACHE_DIR": str(tmp_path / f"c{n}")})
        assert r.returncode == 0, r.stderr
        out[n] = json.loads(r.stdout.strip().splitlines()[-1])
    grow = {n: (v["after_kb"] - v["before_kb"]) / 1024 for n, v in out.items()}
    data_mb = 20000 * 3 * 64 * 64 * 4 / 2**20
    assert grow[20000] - grow[2000] < 64 and grow[20000] < data_mb / 8, grow
    assert out[2000]["top"] != out[20000]["top"]  # the larger set was really scored
