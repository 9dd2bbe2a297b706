"""The small convolutional network used by the embedded MNIST demo."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MnistCNN"]


class MnistCNN(nn.Module):
    """Small CNN for 28x28 grayscale digits (MNIST).

    Three convolution blocks followed by two fully connected layers. The
    qualified layer names are part of the demo's public contract (the widgets
    and their tests refer to them):

    ==================  ==========================  ======================
    name                layer                       output shape (per item)
    ==================  ==========================  ======================
    ``features.0``      ``Conv2d(1, 32, 3)``        32 x 26 x 26
    ``features.1``      ``ReLU()``                  32 x 26 x 26
    ``features.2``      ``MaxPool2d(2)``            32 x 13 x 13
    ``features.3``      ``Conv2d(32, 64, 3)``       64 x 11 x 11
    ``features.4``      ``ReLU()``                  64 x 11 x 11
    ``features.5``      ``MaxPool2d(2)``            64 x 5 x 5
    ``features.6``      ``Conv2d(64, 128, 3)``      128 x 3 x 3
    ``features.7``      ``ReLU()``                  128 x 3 x 3
    ``classifier.0``    ``Flatten()``               1152
    ``classifier.1``    ``Linear(1152, 70)``        70
    ``classifier.2``    ``ReLU()``                  70
    ``classifier.3``    ``Dropout(0.3)``            70
    ``classifier.4``    ``Linear(70, 10)``          10
    ==================  ==========================  ======================

    All ReLUs are non-inplace, so forward hooks see the pre-activation
    tensors unchanged.

    Examples
    --------
    >>> import torch
    >>> model = MnistCNN().eval()
    >>> model(torch.zeros(4, 1, 28, 28)).shape
    torch.Size([4, 10])
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 3 * 3, 70),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(70, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute class logits.

        Parameters
        ----------
        x : torch.Tensor
            Float tensor of shape ``(N, 1, 28, 28)``, normalized with the
            demo's mean ``0.1307`` and std ``0.3081``.

        Returns
        -------
        torch.Tensor
            Logits of shape ``(N, 10)`` (no softmax applied).
        """
        return self.classifier(self.features(x))
