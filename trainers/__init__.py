"""CIFAR loading, augmentation, proxy training and full retraining.

Importing it turns TensorFlow's oneDNN kernels on unless the user chose (TF_ENABLE_ONEDNN_OPTS set):
TensorFlow enables them by default only on CPUs with AVX-512 VNNI/BF16 or AMX, and on an AVX2-only
AMD EPYC the recipe's training step ran 1.56x faster with them (448 vs 287 images/s, median of 5
alternating rounds, bench/onednn_speed.py). It must happen before TensorFlow is imported, so every
module that trains imports this package first.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
