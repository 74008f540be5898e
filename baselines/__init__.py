"""Baseline unlearning algorithms, one module each, on the interface of
:mod:`dmm.unlearning.base`. Importing this package registers them all by name:
``ga``, ``gd``, ``neggrad-plus``, ``scrub``, ``random-labels``, ``salun``, ``l1-sparse``,
``ssd``, ``retrain``, ``do-nothing``. Hyperparameters and grids: ``configs/methods``.
"""

from .do_nothing import DoNothing
from .ga import GradientAscent
from .gd import GradientDescent
from .l1_sparse import L1Sparse
from .neggrad_plus import NegGradPlus
from .random_labels import RandomLabels
from .retrain import Retrain
from .salun import SalUn
from .scrub import SCRUB
from .ssd import SSD

__all__ = [
    "SCRUB",
    "SSD",
    "DoNothing",
    "GradientAscent",
    "GradientDescent",
    "L1Sparse",
    "NegGradPlus",
    "RandomLabels",
    "Retrain",
    "SalUn",
]
