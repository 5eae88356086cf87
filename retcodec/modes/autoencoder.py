"""CODEC's thresholded sparse autoencoder (:class:`ContributionModes`) and its sparse modes.

An MLP encoder gives sigmoid pre-loadings ``a``, a hard threshold keeps
``z = a·1[a ≥ θ]``, and a (by default non-negative) dictionary of atoms
reconstructs the sample (``docs/modes.md``); by default the atoms are merged
into sparse modes with continuous, thresholded loadings (:mod:`retcodec.modes.compact`).
It follows the interface of :class:`~retcodec.modes.base.ModesBase` and is
re-exported by :mod:`retcodec.modes.estimators`.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from typing import Any

import numpy as np
import torch
import xarray as xr
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import nn

from retcodec.engine.threads import torch_threads
from retcodec.errors import ConfigurationError
from retcodec.modes.base import (ModesBase, check_matrix, check_n_modes, check_positive_int, check_sign,
                                 energy_order, global_scale, register_estimator)
from retcodec.modes.compact import (Frontier, activity_cut, copies_pool, explained_r2, refine, scan_frontier,
                                    thresholded_loadings, unit_rows)

__all__ = ["ContributionModes", "EMPTY_ATOM_RTOL", "MAX_COMPACT_MODES", "ACTIVITY_THRESHOLD", "MERGE_COSINE"]

EMPTY_ATOM_RTOL = 1e-6     # an atom whose norm is below this share of the largest is empty
MAX_COMPACT_MODES = 32     # default cap on the number of modes
#: a mode is active in a sample when its part of the reconstruction is at least this share of the
#: median sample norm (tuned on the planted tuning seeds 0-2 of benchmarks/bench_modes.py)
ACTIVITY_THRESHOLD = 0.2
#: atoms whose directions are at least this cosine apart-close are scaled copies of one direction
MERGE_COSINE = 0.95
_TRANSFORM_BATCH = 65536


def _torch_r2(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    total = ((x - x.mean(dim=0)) ** 2).sum()
    residual = ((x - x_hat) ** 2).sum()
    return float(1.0 - residual / total) if float(total) > 0 else float(residual == 0)


# --------------------------------------------------------------------------- autoencoder
class _SparseAutoencoder(nn.Module):
    """Encoder MLP -> sigmoid pre-loadings -> hard threshold -> dictionary.

    ``x (B, d) -> a (B, K) in (0, 1) -> z = a·1[a ≥ θ] -> x̂ = z @ D (B, d)``; the
    threshold mask is a constant in the backward pass, so gradients reach ``a``
    only through atoms that pass it.
    """

    def __init__(self, n_features: int, n_hidden: int, n_atoms: int, dropout: float,
                 nonneg: bool) -> None:
        super().__init__()
        self.nonneg = nonneg
        self.hidden1 = nn.Linear(n_features, n_hidden)
        self.drop1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(n_hidden)
        self.hidden2 = nn.Linear(n_hidden, n_hidden)
        self.drop2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(n_hidden)
        self.readout = nn.Linear(n_hidden, n_atoms, bias=False)
        self.dictionary_raw = nn.Parameter(torch.empty(n_atoms, n_features))

    def dictionary(self) -> torch.Tensor:
        """``D`` (K, d): ReLU of the raw parameters when non-negative."""
        return torch.relu(self.dictionary_raw) if self.nonneg else self.dictionary_raw

    def preloadings(self, x: torch.Tensor) -> torch.Tensor:
        """``a = sigmoid(encoder(x))``: (B, d) -> (B, K)."""
        h = self.norm1(torch.relu(self.drop1(self.hidden1(x))))
        h = self.norm2(torch.relu(self.drop2(self.hidden2(h))))
        return torch.sigmoid(self.readout(h))

    def forward(self, x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Loadings ``z`` (B, K) and reconstruction ``x̂`` (B, d)."""
        a = self.preloadings(x)
        z = a * (a >= threshold).to(a.dtype)
        return z, z @ self.dictionary()


# torch state of the autoencoder <-> Dataset variables (name, dims)
_STATE_LAYOUT = {
    "hidden1.weight": ("sae_hidden", "feature"), "hidden1.bias": ("sae_hidden",),
    "norm1.weight": ("sae_hidden",), "norm1.bias": ("sae_hidden",),
    "hidden2.weight": ("sae_hidden", "sae_hidden_in"), "hidden2.bias": ("sae_hidden",),
    "norm2.weight": ("sae_hidden",), "norm2.bias": ("sae_hidden",),
    "readout.weight": ("sae_atom", "sae_hidden"),
    "dictionary_raw": ("sae_atom", "feature"),
}


def _state_variable(key: str) -> str:
    return "sae_" + key.replace(".", "_")


@register_estimator
class ContributionModes(ModesBase):
    """CODEC's thresholded sparse autoencoder, and its sparse modes (``docs/modes.md``).

    Two views of one fit. The *atoms* are the autoencoder's alive dictionary
    rows (the paper's modes; ``compact=False`` makes them the modes). The
    *sparse modes* (default) merge atoms that are scaled copies of one
    direction (cosine >= ``merge_cosine``), grow modes from those directions
    on the held-out reconstruction-sparsity frontier and pick the operating
    point by ``compact_tolerance`` and ``l0_tolerance``
    (:mod:`retcodec.modes.compact`); a mode's loading is 0 unless its part of
    the reconstruction reaches ``activity_cut_`` (sparse by construction).

    ``X`` (samples, d) is divided by ``scale_`` (its global std); an encoder
    ``d -> H -> H -> K`` (Linear, Dropout, ReLU, LayerNorm, twice; a bias-free
    Linear; sigmoid) gives pre-loadings ``a ∈ (0, 1)^K``; loadings are
    ``z = a·1[a ≥ threshold]`` (the mask is not differentiated); the
    reconstruction is ``z @ D`` with a dictionary ``D`` (K, d), non-negative by a
    ReLU on its parameters when ``nonneg``. Loss: MSE + ``l1_dictionary``·mean|D|
    + ``l1_loadings``·mean|z|, Adam, step decay of the learning rate, the weights
    of the best validation R² are kept, early stopping after ``patience`` epochs
    without improvement.

    Initialisation (not specified by the paper) decides how fast it learns:
    an atom whose ``a`` never reaches θ gets no gradient. With PyTorch's default
    initialisation almost no ``a`` reaches 0.9, so few atoms ever learn. Here
    the read-out weights start at ``N(0, s²/H)`` with ``s`` chosen so that a
    share ``init_active`` of the atoms passes θ for a typical sample, and the
    dictionary starts as random training samples (``init="data"``) divided by
    the expected number of active atoms, so the first reconstruction has the
    scale of the data. On 6000 x 16 synthetic samples of 6 known modes
    (``benchmarks/bench_modes.py``) the default atoms (~125 alive) reach R² 0.97
    and contain the modes (matched cosine ≥ 0.98) in ~50 epochs; the compact
    modes are the 6 planted ones (cosine > 0.999, R² > 0.99, the same for
    every seed), ~10 s of CPU on one thread; the paper's retina settings (lr 1e-5, H = d, PyTorch's
    initialisation) leave every atom dead after 800 epochs, and with this
    initialisation reach R² 0.88. ``init_active=None, init="random"`` gives
    PyTorch's default read-out.

    Parameters
    ----------
    n_modes : int or None
        Dictionary size K; ``None``: ``multiplier * n_features``.
    multiplier : int
        K per input feature when ``n_modes`` is None (paper's baseline: 3; retina script: 10).
    hidden : int or None
        Encoder width H; ``None``: ``max(64, 4 * n_features)``.
    threshold : float in (0, 1)
        θ of the hard threshold (paper: 0.9).
    l1_dictionary, l1_loadings : float
        Weights of mean|D| and mean|z| in the loss (paper, retina: 1e-4 and 0).
    nonneg : bool
        Constrain the dictionary to be non-negative (then ``X`` must be ≥ 0).
    init : {"data", "random"}
        Dictionary initialisation: random training samples, or uniform random.
    init_active : float in (0, 0.5) or None
        Expected share of atoms above θ at initialisation; None: PyTorch's
        default read-out initialisation.
    lr, lr_decay, decay_every : float, float, int
        Adam learning rate, multiplied by ``lr_decay`` every ``decay_every`` epochs.
    batch_size, max_epochs, patience : int
        Mini-batch size, epoch budget, early-stopping patience (epochs).
    tol : float
        Minimum validation-R² gain that counts as an improvement.
    validation_fraction : float in [0, 1)
        Random share of samples held out to select weights; 0: select on the
        training R² (as the paper's script).
    dropout : float
        Dropout rate of the encoder.
    scale : "std", "none"/None or float
        Global scale ``X`` is divided by while fitting.
    sign : {"pos", "both"}
        Which part of a (time, channel, sign) contribution :func:`fit_layer`
        feeds to this estimator: ``C+`` or ``[|C-|, C+]``. ``fit`` on a matrix
        uses the matrix as given.
    device : str
        torch device.
    random_state : int, RandomState or None
        Seed of initialisation, validation split, batches and dropout.
    verbose : bool
        Print one line per epoch.
    compact : bool
        Modes are the sparse modes (default) or the alive atoms (the paper's).
    n_compact : int or None
        Number of modes; None: chosen on the frontier (at most ``max_compact``,
        default ``min(4 * n_features, MAX_COMPACT_MODES)``).
    compact_tolerance : float
        Held-out R² a smaller count may lose against the best count.
    l0_tolerance : float
        Held-out L0 the chosen count may exceed the lowest L0 of the counts
        within ``compact_tolerance``; also the L0 a pruned mode must save.
    activity_threshold : float in [0, 1)
        A mode is active when its part ``z_k ‖c_k‖`` is at least this share
        of the median training-sample norm (``activity_cut_``).
    merge_cosine : float in (0, 1]
        Atoms closer than this cosine are scaled copies of one direction.

    Attributes
    ----------
    components_ : ndarray (n_modes_, n_features)
        The modes in the units of ``X``, ordered by decreasing explained energy
        (``energy_``). Compact modes are scaled so that a mode's mean loading
        over the samples where it is active is 1 (a loading of 1 is a typical
        occurrence); atoms are ``scale_ * D_k``.
    energy_ : ndarray (n_modes_,)
        Share of ``Σ‖x‖²`` of the training data carried by each mode.
    alive_ : ndarray of bool (K,)
        Atoms with non-zero weights (norm above ``EMPTY_ATOM_RTOL`` times the
        largest) and a non-zero loading on at least one training sample; an
        atom with numerically zero weights is never alive and never a mode.
    atoms_ : ndarray of int (n_alive,)
        Alive atoms in decreasing explained energy; ``atom_components_`` their
        rows ``scale_ * D`` (n_alive, n_features); ``transform_atoms`` their loadings.
    atom_mode_ : ndarray of int (K,)
        Mode each atom belongs to: for sparse modes the mode whose direction
        is closest (cosine) to the atom's; -1 for atoms that are not alive.
    atom_index_ : ndarray of int (n_modes_,)
        Representative atom of each mode: of the atoms in the mode, the one
        with most energy (-1 if the refinement left the mode with no atom);
        for ``compact=False``, the atom that is the mode.
    count_r2_ : ndarray (n_candidates,)
        Held-out R² for 1, 2, ... modes (empty for ``compact=False``);
        ``frontier_`` holds the whole frontier (counts, held-out R², L0, share
        of samples with no active mode, the operating point);
        ``count_rule_`` says in words how the count was chosen.
    activity_cut_ : float
        The cut on ``z_k ‖c_k‖`` in the units of ``X``.
    fraction_none_ : float
        Share of training samples with no active mode.
    atom_r2_, atom_l0_ : float
        R² and mean active atoms per sample of the raw atoms (paper's numbers).
    n_modes_, n_atoms_, n_features_in_ : int
    scale_ : float
    r2_ : float
        R² of the modes on the training data (all of it).
    val_r2_ : float
        Best validation R² (training R² when ``validation_fraction == 0``).
    l0_ : float
        Mean number of active modes per sample.
    history_ : dict
        ``{"train_loss": [...], "val_r2": [...]}`` per epoch.
    n_iter_ : int
        Epochs run.
    best_epoch_ : int
        Epoch (0-based) of the kept weights.
    fit_time_ : float
        Seconds spent in ``fit``.

    Notes
    -----
    Training runs in float32; the kept network is then stored in float64.
    ``transform`` computes in float64 sample by sample (independent of the
    batch): for sparse modes the thresholded non-negative least-squares
    loadings on ``components_``; for atoms (and ``transform_atoms``) the thresholded
    pre-loadings, every non-zero one ≥ ``threshold`` and < 1 (the global scale
    sits in ``atom_components_``). Atoms dead on the training data are dropped,
    also for new data.
    """

    def __init__(self, n_modes: int | None = None, multiplier: int = 3,
                 hidden: int | None = None, threshold: float = 0.9,
                 l1_dictionary: float = 1e-4, l1_loadings: float = 0.0, nonneg: bool = True,
                 init: str = "data", init_active: float | None = 0.1,
                 lr: float = 1e-3, lr_decay: float = 0.98, decay_every: int = 25,
                 batch_size: int = 128, max_epochs: int = 300, patience: int = 30,
                 tol: float = 1e-4, validation_fraction: float = 0.1, dropout: float = 0.05,
                 scale: str | float | None = "std", sign: str = "pos", device: str = "cpu",
                 random_state: int | np.random.RandomState | None = None,
                 verbose: bool = False, compact: bool = True, n_compact: int | None = None,
                 max_compact: int | None = None, compact_tolerance: float = 0.01,
                 l0_tolerance: float = 0.1, activity_threshold: float = ACTIVITY_THRESHOLD,
                 merge_cosine: float = MERGE_COSINE) -> None:
        self.compact = compact
        self.n_compact = n_compact
        self.max_compact = max_compact
        self.compact_tolerance = compact_tolerance
        self.l0_tolerance = l0_tolerance
        self.activity_threshold = activity_threshold
        self.merge_cosine = merge_cosine
        self.n_modes = n_modes
        self.multiplier = multiplier
        self.hidden = hidden
        self.threshold = threshold
        self.l1_dictionary = l1_dictionary
        self.l1_loadings = l1_loadings
        self.nonneg = nonneg
        self.init = init
        self.init_active = init_active
        self.lr = lr
        self.lr_decay = lr_decay
        self.decay_every = decay_every
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.tol = tol
        self.validation_fraction = validation_fraction
        self.dropout = dropout
        self.scale = scale
        self.sign = sign
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ public API
    def fit(self, X: Any, y: Any = None) -> "ContributionModes":
        """Fit the autoencoder to ``X`` (samples, features)."""
        start = time.perf_counter()
        self._check_params()
        X = check_matrix(X, nonneg=self.nonneg, owner=type(self).__name__,
                          min_samples=2 if self.validation_fraction == 0 else 10)
        n_features = X.shape[1]
        self.n_features_in_ = n_features
        self.scale_ = global_scale(X, self.scale)
        self.n_atoms_ = self._n_atoms(n_features)
        self.hidden_ = self.hidden if self.hidden is not None else max(64, 4 * n_features)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.seed_ = seed
        device = torch.device(self.device)
        with torch.random.fork_rng(devices=_fork_devices(device)), torch_threads(1):
            torch.manual_seed(seed)
            self._module = self._train(torch.as_tensor(X / self.scale_, dtype=torch.float32),
                                       device)
        self._set_modes_from_module(X)
        self.fit_time_ = time.perf_counter() - start
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Loadings of the modes: (n, n_features) -> (n, n_modes_), non-negative.

        Compact modes: thresholded non-negative least squares on ``components_``
        (a mode's loading is 0 unless its part ``z_k ‖c_k‖`` reaches
        ``activity_cut_``; :func:`~retcodec.modes.compact.thresholded_loadings`);
        atoms: thresholded pre-loadings (0 or in [θ, 1)).
        """
        X = self._validate_input(X)
        if self.compact and len(self.atoms_):
            Z = thresholded_loadings(X, self.components_, self.activity_cut_)
            return Z
        return self._all_loadings(X)[:, self.atoms_]

    def transform_atoms(self, X: Any) -> np.ndarray:
        """Thresholded loadings of the alive atoms (``atoms_`` order): (n, d) -> (n, n_alive)."""
        X = self._validate_input(X)
        return self._all_loadings(X)[:, self.atoms_]

    @property
    def dictionary_(self) -> np.ndarray:
        """The whole dictionary ``scale_ * D`` (n_atoms_, n_features), dead atoms included."""
        check_is_fitted(self)
        with torch.no_grad():
            return self._module.dictionary().double().cpu().numpy() * self.scale_

    # ------------------------------------------------------------------ internals
    def _needs_nonneg_input(self) -> bool:
        return bool(self.nonneg)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = bool(self.nonneg)
        tags.non_deterministic = self.random_state is None
        return tags

    def _n_atoms(self, n_features: int) -> int:
        if self.n_modes is not None:
            return check_n_modes(self.n_modes)
        return check_positive_int(self.multiplier, "multiplier") * n_features

    def _check_params(self) -> None:
        for name in ("n_compact", "max_compact"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        if not 0 <= self.compact_tolerance < 1:
            raise ConfigurationError(f"compact_tolerance must lie in [0, 1), "
                                     f"got {self.compact_tolerance!r}")
        if not self.l0_tolerance >= 0:
            raise ConfigurationError(f"l0_tolerance must be >= 0, got {self.l0_tolerance!r}")
        if not 0 <= self.activity_threshold < 1:
            raise ConfigurationError(f"activity_threshold must lie in [0, 1) (share of the median "
                                     f"sample norm), got {self.activity_threshold!r}")
        if not 0 < self.merge_cosine <= 1:
            raise ConfigurationError(f"merge_cosine must lie in (0, 1], got {self.merge_cosine!r}")
        if self.n_modes is not None:
            check_n_modes(self.n_modes)
        check_sign(self.sign)
        if not 0 < self.threshold < 1:
            raise ConfigurationError(f"threshold must lie in (0, 1), got {self.threshold!r}")
        if self.init_active is not None and not 0 < self.init_active < 0.5:
            raise ConfigurationError(f"init_active must lie in (0, 0.5) or be None, "
                                     f"got {self.init_active!r}")
        if self.init not in ("data", "random"):
            raise ConfigurationError(f"init must be 'data' or 'random', got {self.init!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigurationError(f"validation_fraction must lie in [0, 1), "
                                     f"got {self.validation_fraction!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigurationError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        for name in ("batch_size", "max_epochs", "patience", "decay_every"):
            check_positive_int(getattr(self, name), name)
        if self.hidden is not None:
            check_positive_int(self.hidden, "hidden")
        for name in ("lr", "lr_decay"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("l1_dictionary", "l1_loadings", "tol"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def _init_weights(self, module: _SparseAutoencoder, X_train: torch.Tensor) -> None:
        """Read-out so that ``init_active`` of the atoms pass θ; dictionary at the data's scale."""
        n_atoms, n_features = module.dictionary_raw.shape
        n_active = 1.0
        with torch.no_grad():
            if self.init_active is not None:
                std = _readout_std(self.threshold, self.init_active)
                module.readout.weight.normal_(0.0, std / math.sqrt(module.readout.in_features))
                n_active = max(1.0, self.init_active * n_atoms)
            typical = float(X_train.abs().mean()) or 1.0
            if self.init == "data":
                rows = torch.randint(len(X_train), (n_atoms,))
                # a small positive jitter keeps exact zeros trainable through the ReLU
                jitter = 0.05 * typical * torch.rand(n_atoms, n_features)
                module.dictionary_raw.copy_(X_train[rows] + jitter)
            else:
                low = 0.0 if self.nonneg else -typical
                module.dictionary_raw.uniform_(low, typical)
            module.dictionary_raw.div_(n_active)

    def _split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(n)
        n_val = int(round(self.validation_fraction * n))
        return order[n_val:], order[:n_val]

    def _loss(self, module: _SparseAutoencoder, x: torch.Tensor, threshold: float) -> torch.Tensor:
        z, x_hat = module(x, threshold)
        loss = torch.mean((x_hat - x) ** 2)
        if self.l1_dictionary:
            loss = loss + self.l1_dictionary * module.dictionary().abs().mean()
        if self.l1_loadings:
            loss = loss + self.l1_loadings * z.abs().mean()
        return loss

    def _train(self, X: torch.Tensor, device: torch.device) -> _SparseAutoencoder:
        """Train on scaled ``X`` (n, d); return the module with the best weights (on CPU)."""
        train_idx, val_idx = self._split(len(X))
        X_train = X[train_idx]
        X_val = X[val_idx] if len(val_idx) else X
        module = _SparseAutoencoder(X.shape[1], self.hidden_, self.n_atoms_, self.dropout,
                                    self.nonneg)
        self._init_weights(module, X_train)
        module.to(device)
        X_train, X_val = X_train.to(device), X_val.to(device)
        optimizer = torch.optim.Adam(module.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, self.decay_every, self.lr_decay)
        threshold = self.threshold
        history: dict[str, list[float]] = {"train_loss": [], "val_r2": []}
        best_r2, best_state, best_epoch, waited = -np.inf, None, -1, 0
        for epoch in range(self.max_epochs):
            loss = self._train_epoch(module, optimizer, X_train, threshold)
            schedule.step()
            val_r2 = self._evaluate(module, X_val, threshold)
            history["train_loss"].append(loss)
            history["val_r2"].append(val_r2)
            if self.verbose:
                print(f"epoch {epoch:4d}  loss {loss:.5f}  validation R² {val_r2:.4f}")
            if val_r2 > best_r2 + self.tol:
                best_r2, best_epoch, waited = val_r2, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best_state is not None:  # None only if R² was never finite
            module.load_state_dict(best_state)
        self.history_, self.n_iter_ = history, len(history["val_r2"])
        self.val_r2_, self.best_epoch_ = float(best_r2), best_epoch
        return module.cpu().double().eval()

    def _train_epoch(self, module: _SparseAutoencoder, optimizer: torch.optim.Optimizer,
                     X: torch.Tensor, threshold: float) -> float:
        module.train()
        order = torch.randperm(len(X)).to(X.device)
        total = 0.0
        for start in range(0, len(X), self.batch_size):
            batch = X[order[start:start + self.batch_size]]
            optimizer.zero_grad(set_to_none=True)
            loss = self._loss(module, batch, threshold)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        return total / len(X)

    @staticmethod
    def _evaluate(module: _SparseAutoencoder, X: torch.Tensor, threshold: float) -> float:
        module.eval()
        with torch.no_grad():
            return _torch_r2(X, module(X, threshold)[1])

    def _all_loadings(self, X: np.ndarray) -> np.ndarray:
        """Loadings of every atom: (n, d) original units -> (n, K) float64."""
        out = np.empty((len(X), self.n_atoms_), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(X), _TRANSFORM_BATCH):
                x = torch.as_tensor(X[start:start + _TRANSFORM_BATCH] / self.scale_)
                out[start:start + len(x)] = self._module(x, self.threshold)[0].numpy()
        return out

    def _set_modes_from_module(self, X: np.ndarray) -> None:
        """Alive atoms, then the modes (compact or atoms) and their summaries."""
        Z_all = self._all_loadings(X)
        dictionary = self.dictionary_
        norms = np.linalg.norm(dictionary, axis=1)
        nonempty = norms > EMPTY_ATOM_RTOL * norms.max() if norms.size and norms.max() > 0 \
            else np.zeros(len(norms), dtype=bool)
        self.alive_ = (Z_all != 0).any(axis=0) & nonempty
        alive = np.flatnonzero(self.alive_)
        self.atoms_ = alive[energy_order(Z_all[:, alive], dictionary[alive])]
        self.atom_components_ = dictionary[self.atoms_]
        Z_atoms = Z_all[:, self.atoms_]
        self.atom_r2_ = explained_r2(X, Z_atoms @ self.atom_components_)
        self.atom_l0_ = float((Z_atoms != 0).sum(axis=1).mean())
        self.atom_mode_ = np.full(self.n_atoms_, -1, dtype=np.int64)
        self.count_r2_ = np.zeros(0)
        self.frontier_ = None
        self.activity_cut_ = 0.0       # atoms: a loading is active when it passes θ
        if len(alive) == 0:
            warnings.warn("no atom passed the threshold on any sample: no modes were found; "
                          "use init_active (default 0.1), a larger lr or more epochs",
                          ConvergenceWarning, stacklevel=3)
        if self.compact and len(alive):
            Z = self._fit_compact(X, Z_atoms)
        else:
            self.components_, Z = self.atom_components_, Z_atoms
            self.atom_index_ = self.atoms_.copy()
            self.atom_mode_[self.atoms_] = np.arange(len(self.atoms_))
            self.count_rule_ = ("alive atoms of the thresholded autoencoder (compact=False)"
                                if len(alive) else "no alive atom")
        self.n_modes_ = len(self.components_)
        self._set_summary(X, Z)

    def _fit_compact(self, X: np.ndarray, Z_atoms: np.ndarray) -> np.ndarray:
        """Merge the alive atoms into sparse modes; set their attributes; return loadings."""
        Xs = X / self.scale_
        atoms = self.atom_components_ / self.scale_
        weights = Z_atoms.sum(axis=0) * np.linalg.norm(atoms, axis=1)
        cut = activity_cut(Xs, self.activity_threshold)
        self.activity_cut_ = cut * self.scale_
        pool = copies_pool(atoms, weights, self.merge_cosine)
        limit = self.max_compact if self.max_compact is not None \
            else min(4 * X.shape[1], MAX_COMPACT_MODES)
        fixed = self.n_compact
        self.frontier_ = scan_frontier(Xs, pool, limit, cut,
                                       self.compact_tolerance, self.l0_tolerance, self.nonneg, fixed=fixed,
                                       merge_cosine=self.merge_cosine)
        self.count_r2_ = self.frontier_.r2
        self.count_rule_ = (f"fixed: n_compact={self.n_compact}" if fixed is not None
                            else self._rule_text(len(pool)))
        D = refine(Xs, self.frontier_.pruned, cut, self.nonneg)
        Z = thresholded_loadings(Xs, D, cut)
        used = Z.max(axis=0) > 0 if len(D) else np.zeros(0, bool)
        D, Z = D[used], Z[:, used]
        typical = np.array([z[z > 0].mean() for z in Z.T]) if len(D) else np.zeros(0)
        D, Z = D * typical[:, None], Z / typical
        order = energy_order(Z, D)
        self.components_, Z = D[order] * self.scale_, Z[:, order]
        cosine = _cosines(atoms, D[order])
        self.atom_mode_[self.atoms_] = np.argmax(cosine, axis=1)
        self.atom_index_ = np.array([self._representative(mode) for mode in range(len(D))],
                                    dtype=np.int64)
        return Z

    def _rule_text(self, copies: int) -> str:
        """The count rule in words, with the numbers of this fit."""
        f = self.frontier_
        i = f.chosen
        return (f"atoms that are scaled copies (cosine >= {self.merge_cosine:g}) merged into {copies} "
                f"directions; modes grown from them one at a time (the direction that best explains the "
                f"residual), 1..{len(f.r2)} scanned on held-out samples; chosen: the smallest count with "
                f"held-out R² within {self.compact_tolerance:g} of the best ({f.r2.max():.4f}) and L0 "
                f"within {self.l0_tolerance:g} of the lowest such L0: {f.n_modes[i]} modes, held-out "
                f"R² {f.r2[i]:.4f}, L0 {f.l0[i]:.2f}; then modes dropped, weakest first, that buy less "
                f"than {self.compact_tolerance / 4:g} of held-out R² and save less than {self.l0_tolerance:g} "
                f"of L0: {len(f.pruned)} modes")

    def _representative(self, mode: int) -> int:
        """The atom of ``mode`` with most energy (``atoms_`` is in energy order); -1 if none."""
        members = self.atoms_[self.atom_mode_[self.atoms_] == mode]
        return int(members[0]) if len(members) else -1

    def _state_variables(self) -> dict[str, tuple]:
        state = {_state_variable(key): (_STATE_LAYOUT[key], value.detach().cpu().numpy())
                 for key, value in self._module.state_dict().items()}
        state["sae_alive"] = (("sae_atom",), self.alive_)
        state["sae_atom_mode"] = (("sae_atom",), self.atom_mode_)
        state["count_r2"] = (("count",), self.count_r2_)
        if self.frontier_ is not None:
            f = self.frontier_
            state["frontier_n_modes"] = (("count",), f.n_modes)
            state["frontier_r2"] = (("count",), f.r2)
            state["frontier_l0"] = (("count",), f.l0)
            state["frontier_fraction_none"] = (("count",), f.none)
            state["frontier_pareto"] = (("count",), f.pareto)
            state["frontier_chosen"] = (("count",), np.arange(len(f.r2)) == f.chosen)
        state["sae_atoms"] = (("alive_atom",), self.atoms_)
        state["history_train_loss"] = (("epoch",), np.asarray(self.history_["train_loss"]))
        state["history_val_r2"] = (("epoch",), np.asarray(self.history_["val_r2"]))
        return state

    def _state_attrs(self) -> dict[str, Any]:
        return {"seed": self.seed_, "hidden": self.hidden_, "val_r2": self.val_r2_,
                "activity_cut": self.activity_cut_,
                "atom_r2": self.atom_r2_, "atom_l0": self.atom_l0_,
                "n_iter": self.n_iter_, "best_epoch": self.best_epoch_,
                "fit_time_s": self.fit_time_}

    def _restore(self, ds: xr.Dataset) -> None:
        super()._restore(ds)
        self.alive_ = ds["sae_alive"].values.astype(bool)
        self.atom_mode_ = ds["sae_atom_mode"].values.astype(np.int64)
        self.count_r2_ = ds["count_r2"].values.astype(np.float64)
        self.activity_cut_ = float(ds.attrs.get("activity_cut", 0.0))
        self.frontier_ = None
        if "frontier_r2" in ds:
            self.frontier_ = Frontier(ds["frontier_n_modes"].values.astype(np.int64),
                                      ds["frontier_r2"].values.astype(np.float64),
                                      ds["frontier_l0"].values.astype(np.float64),
                                      ds["frontier_fraction_none"].values.astype(np.float64),
                                      int(np.flatnonzero(ds["frontier_chosen"].values)[0]))
        self.count_rule_ = str(ds.attrs["count_rule"])
        self.atom_r2_, self.atom_l0_ = float(ds.attrs["atom_r2"]), float(ds.attrs["atom_l0"])
        self.n_atoms_, self.hidden_ = len(self.alive_), int(ds.attrs["hidden"])
        module = _SparseAutoencoder(self.n_features_in_, self.hidden_, self.n_atoms_,
                                    self.dropout, self.nonneg).double()
        module.load_state_dict({key: torch.from_numpy(ds[_state_variable(key)].values.copy())
                                for key in _STATE_LAYOUT})
        self._module = module.eval()
        self.atoms_ = ds["sae_atoms"].values.astype(np.int64)
        self.atom_components_ = self.dictionary_[self.atoms_]
        self.history_ = {"train_loss": ds["history_train_loss"].values.tolist(),
                         "val_r2": ds["history_val_r2"].values.tolist()}
        self.seed_, self.n_iter_ = int(ds.attrs["seed"]), int(ds.attrs["n_iter"])
        self.val_r2_, self.best_epoch_ = float(ds.attrs["val_r2"]), int(ds.attrs["best_epoch"])
        self.fit_time_ = float(ds.attrs["fit_time_s"])


def _cosines(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``A`` (m, d) with every row of ``B`` (k, d): (m, k)."""
    return unit_rows(A) @ unit_rows(B).T


def _readout_std(threshold: float, active_share: float) -> float:
    """Std ``s`` of a centred logit with ``P(sigmoid(logit) >= threshold) = active_share``."""
    logit = math.log(threshold / (1 - threshold))
    if logit <= 0:  # θ <= 0.5: a centred logit of any spread passes θ half the time or more
        return 1.0
    return logit / float(norm.isf(active_share))


def _fork_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []
