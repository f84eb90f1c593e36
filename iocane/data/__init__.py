"""The data area: raw datasets (``sources`` names them and dispatches to ``idx`` for MNIST and
Fashion-MNIST, ``cifar_svhn`` for CIFAR-10 and SVHN; ``raw`` holds what they share, ``cache`` the
decompressed files) and the prepared splits every stage reads (``prepared``)."""
