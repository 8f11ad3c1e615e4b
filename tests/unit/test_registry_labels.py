"""Labels in a version's reference (``label:<name>`` keys of reference.npz): checked at publish, read back
by :func:`registry.artifacts.read_reference_labels` (the monitor's CBPE calibration and quality baseline)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from registry.artifacts import read_reference_labels
from registry.errors import NotFoundError, PublishError, RegistryError
from registry.publish import publish
from registry.signature import read_signature
from tests.unit.test_registry_publish import npz, onnx_file, root, rows

__all__ = ["onnx_file", "root"]  # fixtures shared with the publish tests


def test_reference_labels_are_published_and_read_back(root: Path, onnx_file: Path, tmp_path: Path) -> None:
    labels = {"label__y": np.array([0, 1, 1, 0, 1]), "label__score": np.linspace(0, 1, 5)[:, None]}
    reference = npz(tmp_path / "ref.npz", **rows(), **labels)
    info = publish(root, "m", onnx_file, reference=reference)
    signature = read_signature(onnx_file)
    read = read_reference_labels(info.reference_path, signature)
    assert read.keys() == {"y", "score"}
    np.testing.assert_array_equal(read["y"], labels["label__y"])
    np.testing.assert_array_equal(read["score"], labels["label__score"].ravel())
    unchecked = read_reference_labels(info.reference_path)  # without the signature: the labels' own checks
    assert unchecked.keys() == read.keys()
    np.testing.assert_array_equal(unchecked["y"], read["y"])
    unlabelled = publish(root, "m", onnx_file, reference=npz(tmp_path / "plain.npz", **rows()))
    assert read_reference_labels(unlabelled.reference_path, signature) == {}
    with pytest.raises(NotFoundError):
        read_reference_labels(tmp_path / "missing.npz")


LabelCase = Callable[[], dict[str, np.ndarray]]


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (lambda: {"label__y": np.zeros(4)}, "disagree on the number of rows"),
        (lambda: {"label__y": np.zeros((5, 2))}, "expected [rows] or [rows, 1]"),
        (lambda: {"label__y": np.zeros((5, 1, 1))}, "expected [rows] or [rows, 1]"),
        (lambda: {"label__y": np.array(["a"] * 5)}, "labels must be numbers"),
        (lambda: {"label__y": np.array([0.0, 1.0, np.nan, 0.0, 1.0])}, "must be finite"),
        (lambda: {"label__": np.zeros(5)}, "needs a name"),
        (lambda: {"labels__y": np.zeros(5)}, "or label:<name>"),
    ],
)
def test_bad_reference_labels_are_refused(
    root: Path, onnx_file: Path, tmp_path: Path, labels: LabelCase, fragment: str
) -> None:
    reference = npz(tmp_path / "ref.npz", **rows(), **labels())
    with pytest.raises(PublishError, match=r"ref\.npz") as caught:
        publish(root, "m", onnx_file, reference=reference)
    assert fragment in str(caught.value)
    assert not (root / "m" / "1").exists()
    with pytest.raises(RegistryError, match=r"ref\.npz"):
        read_reference_labels(reference, read_signature(onnx_file))
