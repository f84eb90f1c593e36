"""A compact 3x3 CNN for 28x28 grey images, the plain-loop reference of issue 19.

Two 3x3 conv layers with 32 and 64 filters, each followed by 2x2 max pooling, a 256-unit
hidden layer and a linear classifier: the network of ``benchmarks/plain_loop.py``, the design
note's style of adversarial training. It costs about as much per image as ``madry_cnn`` width 8
(3.6M multiply-adds), with twice the filters at the first layer and 3x3 neighbourhoods. The
width multiplier ``w`` gives filters (4w, 8w) and 32w hidden units, so w=8 is the reference
network. ``benchmarks/budget.py`` trains it to compare iocane's training with the plain loop's
on one network.
"""

from models.madry_cnn import TwoConvCNN

DEFAULT_WIDTH = 8


class CompactCNN(TwoConvCNN):
    """conv3x3(4w)-pool-conv3x3(8w)-pool-FC(32w)-FC(classes), all ReLU."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, width: int = DEFAULT_WIDTH
    ) -> None:
        if width < 1:
            raise ValueError(f"compact_cnn width must be >= 1, got {width}")
        super().__init__(
            in_channels,
            num_classes,
            image_size,
            filters=(4 * width, 8 * width),
            hidden=32 * width,
            kernel=3,
            name="compact_cnn",
            # PyTorch's default init, as the plain loop's network: measured on Fashion-MNIST
            # (Linf 0.1, one PGD-10 epoch with Adam), He init behind the input normalisation
            # made the first layers' activations ~7x larger and ended 4 points less robust.
            he_init=False,
        )


NETWORK = CompactCNN
