"""Tests for cnnwidgets.core.outputs (output selection, heads) and the runner's Scores,
forward_errors and wrapper handling."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from cnnwidgets.core.model import final_activation, named_layers, unwrap_model
from cnnwidgets.core.outputs import Head, check_output, class_names_for, describe_output, region_mask, select_output
from cnnwidgets.core.runner import Scores, forward_errors, logits_only
from cnnwidgets.core.saliency import attribute, vanilla_gradient

Detection = collections.namedtuple("Detection", "boxes scores")


# ---------------------------------------------------------------- selection
def test_select_output_by_index_key_field_and_function():
    boxes, scores = torch.zeros(2, 4), torch.ones(2, 3)
    assert select_output((boxes, scores), 1) is scores
    assert select_output([boxes, scores], -1) is scores
    assert select_output({"out": scores, "aux": boxes}, "out") is scores
    assert select_output(Detection(boxes, scores), "scores") is scores
    assert select_output(Detection(boxes, scores), 0) is boxes
    assert select_output((boxes, scores), lambda out: out[1] * 2).sum() == 12
    assert select_output(scores) is scores


def test_a_structure_without_output_is_refused_with_its_shapes_and_an_example():
    with pytest.raises(ValueError, match=r"a tuple of 2: \[0\] tensor 2 x 4, \[1\] tensor 2 x 3.*output=1"):
        select_output((torch.zeros(2, 4), torch.ones(2, 3)))
    with pytest.raises(ValueError, match=r"a dict \{'boxes': tensor 2 x 4, 'logits': tensor 2 x 5\}.*output='logits'"):
        select_output({"boxes": torch.zeros(2, 4), "logits": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match=r"Detection\(boxes: tensor 2 x 4, scores: tensor 2 x 3\).*output='scores'"):
        select_output(Detection(torch.zeros(2, 4), torch.ones(2, 3)))


def test_bad_selectors_say_what_the_output_is():
    out = (torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"output=5 does not select anything.*a tuple of 2"):
        select_output(out, 5)
    with pytest.raises(ValueError, match=r"output='logits' does not select anything"):
        select_output({"out": torch.zeros(1)}, "logits")
    with pytest.raises(ValueError, match="raised ZeroDivisionError"):
        select_output(out, lambda o: 1 / 0)
    with pytest.raises(ValueError, match=r"output=0 gives a tuple of 2: \[0\] tensor 1, \[1\] tensor 1, not a tensor"):
        select_output(((torch.zeros(1), torch.zeros(1)), torch.zeros(1)), 0)
    with pytest.raises(TypeError, match="got bool"):
        check_output(True)
    with pytest.raises(TypeError, match="an index .int., a key .str., a callable"):
        check_output(1.5)
    assert check_output(2) == 2 and check_output("out") == "out" and check_output(None) is None


def test_describe_output_nests_two_levels():
    assert describe_output([torch.zeros(3), {"a": torch.zeros(1, 2)}]) == "a list of 2: [0] tensor 3, [1] a dict {'a': tensor 1 x 2}"


# ---------------------------------------------------------------- heads
def test_binary_head_two_classes_from_one_logit():
    z = torch.tensor([[-1.0], [2.0]])
    head = Head.of(z)
    assert (head.kind, head.n_classes) == ("binary", 2)
    assert head.scores(z).tolist() == [[1.0, -1.0], [-2.0, 2.0]]
    p = head.probabilities(z)
    torch.testing.assert_close(p[:, 1], torch.sigmoid(z[:, 0]))
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    assert Head.of(torch.zeros(3)).kind == "binary"  # a squeezed (N,) logit too
    assert class_names_for(head, ["cat"]) == ["not cat", "cat"]
    assert class_names_for(Head.of(torch.zeros(2, 3)), ["a", "b", "c"]) == ["a", "b", "c"]


def test_segmentation_head_mean_scores_pixel_shares_and_regions():
    t = torch.zeros(1, 3, 2, 4)
    t[0, 0, :, :2] = 5.0  # class 0 wins the left half
    t[0, 2, :, 2:] = 1.0  # class 2 the right half
    head = Head.of(t)
    assert (head.kind, head.n_classes) == ("segmentation", 3)
    torch.testing.assert_close(head.scores(t), torch.tensor([[2.5, 0.0, 0.5]]))
    torch.testing.assert_close(head.probabilities(t), torch.tensor([[0.5, 0.0, 0.5]]))
    # a box over the right half (fractions of the image), and the same as a mask at 2x resolution
    torch.testing.assert_close(head.scores(t, (0.5, 0.0, 1.0, 1.0)), torch.tensor([[0.0, 0.0, 1.0]]))
    mask = torch.zeros(4, 8)
    mask[:, 4:] = 1
    torch.testing.assert_close(head.scores(t, mask), torch.tensor([[0.0, 0.0, 1.0]]))


def test_region_mask_checks():
    m = region_mask((0.25, 0.0, 0.75, 0.5), 2, (2, 4))
    assert m.shape == (2, 2, 4) and torch.allclose(m.sum(dim=(1, 2)), torch.ones(2))
    assert m[0].nonzero().tolist() == [[0, 1], [0, 2]]
    assert region_mask((0.1, 0.1, 0.12, 0.12), 1, (2, 2)).sum() == 1  # smaller than a pixel: its pixel
    with pytest.raises(ValueError, match="0 <= x0 < x1 <= 1"):
        region_mask((0.5, 0.0, 0.2, 1.0), 1, (2, 2))
    with pytest.raises(ValueError, match="empty"):
        region_mask(torch.zeros(2, 2), 1, (2, 2))
    with pytest.raises(ValueError, match=">= 0"):
        region_mask(-torch.ones(2, 2), 1, (2, 2))


def test_head_shapes_it_cannot_read():
    with pytest.raises(ValueError, match="N x K class logits.*shape \\(2, 3, 4\\)"):
        Head.of(torch.zeros(2, 3, 4))


def test_final_sigmoid_and_softmax_bypassed_for_scores_and_applied_once_for_display():
    torch.manual_seed(0)
    for final, kind in ((nn.Softmax(dim=1), "classes"), (nn.LogSoftmax(dim=1), "classes"),
                        (nn.Sigmoid(), "multilabel")):
        net = nn.Sequential(nn.Linear(3, 4), final)
        x = torch.randn(5, 3)
        scores = Scores(net)
        with logits_only(net):
            out = net(x)
        torch.testing.assert_close(out, net[0](x))  # the logits
        assert scores.head is None and scores(out).shape == (5, 4) and scores.head.kind == kind
        expected = torch.sigmoid(net[0](x)) if kind == "multilabel" else torch.softmax(net[0](x), 1)
        torch.testing.assert_close(scores.probabilities(out), expected.detach())
        assert type(final).__name__ in scores.note
    binary = nn.Sequential(nn.Flatten(), nn.Linear(12, 1), nn.Sigmoid())
    assert type(final_activation(binary)).__name__ == "Sigmoid"
    x = torch.randn(4, 3, 2, 2)
    with logits_only(binary):
        out = binary(x)
    s = Scores(binary)
    torch.testing.assert_close(s.probabilities(out)[:, 1], binary(x)[:, 0].detach())  # the model's sigmoid
    # class 1 is the logit (not the sigmoid), class 0 the negated logit
    w = binary[1].weight.detach().view(1, 3, 2, 2).expand(4, -1, -1, -1)
    with pytest.warns(UserWarning, match="before the sigmoid"):
        torch.testing.assert_close(vanilla_gradient(binary, x, target=1), w)
    with pytest.warns(UserWarning):
        torch.testing.assert_close(vanilla_gradient(binary, x, target=0), -w)


def test_structured_output_attribution_with_output():
    class Det(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.boxes = nn.Linear(4, 4)
            self.cls = nn.Linear(4, 3)

        def forward(self, x):
            f = self.conv(x).relu().mean(dim=(2, 3))
            return Detection(self.boxes(f), self.cls(f))

    torch.manual_seed(0)
    net = Det()
    x = torch.randn(2, 3, 8, 8)
    a = attribute(net, x, "vanilla", 2, output="scores")
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xg).scores[:, 2].sum(), xg)
    torch.testing.assert_close(a, g)
    with pytest.raises(ValueError, match="output='scores'"):
        attribute(net, x, "vanilla", 2)


# ---------------------------------------------------------------- errors and wrappers
def test_forward_errors_name_the_real_cause():
    net = nn.Sequential(nn.Conv2d(3, 4, 5), nn.MaxPool2d(2), nn.Conv2d(4, 4, 5))
    with pytest.raises(ValueError, match=r"\(3 x 8 x 8\) are too small for this network"):
        with forward_errors(torch.zeros(1, 3, 8, 8), net):
            net(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="1 channel"):
        vanilla_gradient(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), torch.zeros(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="too small"):
        vanilla_gradient(nn.Sequential(nn.Conv2d(3, 4, 5), nn.Flatten()), torch.zeros(1, 3, 3, 3), 0)
    with pytest.raises(RuntimeError, match="boom"):  # other errors pass unchanged
        with forward_errors(torch.zeros(1, 3, 8, 8)):
            raise RuntimeError("boom")


def test_wrappers_unwrapped_with_a_note_and_names_without_prefix():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    inner, note = unwrap_model(nn.DataParallel(net))
    assert inner is net and "DataParallel" in note
    assert unwrap_model(net) == (net, None)
    compiled = torch.compile(net, backend="eager")
    inner, note = unwrap_model(compiled)
    assert inner is net and "torch.compile" in note
    assert list(named_layers(compiled)) == ["0", "1"]


def test_float16_model_takes_float32_images():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(2, 3, 8, 8)
    full = attribute(net, x, "integrated_gradients", 1, steps=8)
    low = attribute(net.half(), x, "integrated_gradients", 1, steps=8)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, full, rtol=0.05, atol=2e-3)
