"""The classifiers an audit can examine, one module per kind behind one interface
(:class:`Classifier`: a decision margin on embeddings and the effect of an edit on it).

* ``probe`` — a logistic-regression probe fit on the train split (:func:`fit_probe`),
* a **linear head** (:mod:`.linear`) — ``.safetensors`` / ``.npz`` with ``weight [C, d]`` and
  ``bias [C]``, on raw or (``input="l2"``) L2-normalised embeddings; closed-form edits,
* a **TorchScript** module (:mod:`.torchscript`) — audited by decode-and-rerun (:mod:`.rerun`).
"""

from audit.fairness.classifiers.base import Classifier
from audit.fairness.classifiers.linear import LinearHead, load_linear_head, save_head
from audit.fairness.classifiers.probe import fit_probe
from audit.fairness.classifiers.registry import ClassifierFormat, load_classifier, register
from audit.fairness.classifiers.torchscript import ScriptedClassifier, l2_normalize
from audit.fileio import file_sha256

__all__ = [
    "Classifier",
    "ClassifierFormat",
    "LinearHead",
    "ScriptedClassifier",
    "file_sha256",
    "fit_probe",
    "l2_normalize",
    "load_classifier",
    "load_linear_head",
    "register",
    "save_head",
]
