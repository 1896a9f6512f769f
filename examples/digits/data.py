"""The scikit-learn digits data set as the train/test splits that the digits example uses.

The images (1797 of them, 8x8, 17 grey levels) ship inside scikit-learn, so nothing is downloaded.
The split is stratified 80/20 with a fixed seed, so every run and every machine sees the same samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEST_FRACTION = 0.2
# The digits images hold integer grey levels 0..16; dividing by 16 maps them onto [0, 1].
MAX_GREY_LEVEL = 16.0


def load_digits_splits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, y_train, x_test, y_test)``.

    ``x_*`` are float32 arrays of shape (N, 1, 8, 8) with values in [0, 1]; ``y_*`` are int64 labels 0..9.
    The split is stratified by label and depends only on ``seed``.
    """
    # Imported here: scikit-learn is an optional dependency (the `examples` extra) and slow to import.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / MAX_GREY_LEVEL).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed
    )
    return (
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(y_train),
        np.ascontiguousarray(x_test),
        np.ascontiguousarray(y_test),
    )


def save_npz_splits(out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.npz`` and ``test.npz`` into ``out_dir`` (created if missing) and return their paths.

    Each file holds ``x`` (float32, (N, 1, 8, 8)) and ``y`` (int64, (N,)), the data format of DESIGN §6.
    The files are compressed: the images have only 17 distinct values, so they shrink about tenfold.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = load_digits_splits(seed)
    train_path, test_path = out / "train.npz", out / "test.npz"
    np.savez_compressed(train_path, x=x_train, y=y_train)
    np.savez_compressed(test_path, x=x_test, y=y_test)
    return train_path, test_path
