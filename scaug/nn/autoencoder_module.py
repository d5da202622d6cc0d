"""The cell autoencoder: expression -> latent z -> a count (NB) or continuous (Gaussian) likelihood."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from ._layers import mlp

#: counts are normalised to this many per cell before log1p, for the encoder's input
TARGET_SUM = 1e4

#: An NB entry is drawn by inversion of its distribution function (one uniform, then the pmf
#: recursion while the count grows) when its mean is at most ``INVERSION_MAX_MEAN`` and its
#: ``mu / (mu + theta)`` at most ``INVERSION_MAX_RATIO`` (so the pmf falls at least geometrically
#: and the walk stays short); other entries are drawn as Gamma-Poisson. Both are exact.
INVERSION_MAX_MEAN = 8.0
INVERSION_MAX_RATIO = 0.9
#: the zero test reads one uniform 16-bit integer ``j`` per entry (raw generator bytes: the
#: cheapest uniform numpy draws); an entry that may be nonzero refines it into the float64
#: uniform ``(j + u) / 2**16`` of a fresh ``u``
_GRID = 2**16


def nb_counts(mu: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """Exact negative-binomial draws with means ``mu`` and inverse dispersions ``theta``, as CSR.

    ``mu`` is (n_cells, n_genes); ``theta`` is one value per gene (n_genes,) or per entry. Most
    means of single-cell counts are far below 1, so most entries are zeros, and a zero is decided
    from one uniform and one comparison, without computing the distribution: with ``s`` the
    entry's uniform on [0, 1), the count is the smallest ``k`` with ``s >= P(X > k)``, and since
    ``P(X > 0) <= mu`` every ``s >= mu`` gives 0. ``s`` is read coarsely first (16 random bits,
    which settle ``s >= mu`` for nearly every entry of a small mean) and refined to float64 only
    where the count may be nonzero; those walk the survival function down by the pmf recursion
    ``P(k) = P(k - 1) (k - 1 + theta) / k * mu / (mu + theta)``. Entries of a large mean, or of
    a heavy tail (a small ``theta``), are drawn as Gamma-Poisson instead. Exact up to float64
    rounding; only nonzero counts are stored, no dense count matrix is built, and the same
    ``rng`` state gives the same counts on every platform.

    Returns
    -------
    scipy.sparse.csr_matrix of int64, shape (n_cells, n_genes)

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.nn.autoencoder_module import nb_counts
    >>> mu = np.array([[0.0, 0.01, 5.0], [0.0, 1.0, 500.0]], dtype=np.float32)
    >>> x = nb_counts(mu, np.array([1.0, 2.0, 10.0]), np.random.default_rng(0))
    >>> x.shape, x.dtype, int(x[:, 0].sum())
    ((2, 3), dtype('int64'), 0)
    >>> big = nb_counts(np.full((20000, 1), 3.0, np.float32), np.array([2.0]), np.random.default_rng(1))
    >>> round(float(big.mean()), 2), round(float(big.toarray().var()), 1)  # mu, mu + mu**2 / theta
    (2.99, 7.4)
    """
    n_cells, n_genes = mu.shape
    mu = np.ascontiguousarray(mu, dtype=np.float32)
    theta = np.asarray(theta, dtype=np.float32)
    per_entry = theta.size == mu.size
    theta = theta.reshape(mu.shape) if per_entry else theta.reshape(-1)
    # the largest mean drawn by inversion, per gene (or entry); larger ones are Gamma-Poisson
    limit = np.minimum(INVERSION_MAX_MEAN, theta * (INVERSION_MAX_RATIO / (1 - INVERSION_MAX_RATIO)))
    j = np.frombuffer(rng.bytes(2 * mu.size), dtype="<u2").reshape(mu.shape)
    # every count the inversion makes nonzero is among these (j / 2**16 <= s < P(X > 0) <= mu;
    # mu * 2**16 is exact in float32), and so is every Gamma-Poisson entry (mu > limit) of a gene
    # with limit >= 1 (j / 2**16 < 1 < mu); those of the other genes are added
    keep = j < mu * np.float32(_GRID)
    if per_entry:
        keep |= mu > limit
    elif (low := np.flatnonzero(limit < 1)).size:
        keep[:, low] |= mu[:, low] > limit[low]
    cand = np.flatnonzero(keep)
    m32 = mu.reshape(-1)[cand]
    gene = cand % n_genes
    th = theta.reshape(-1)[cand] if per_entry else theta[gene]
    walk = m32 <= (limit.reshape(-1)[cand] if per_entry else limit[gene])
    m, th = m32.astype(np.float64), th.astype(np.float64)
    values = np.empty(cand.size, dtype=np.int64)
    values[walk] = _nb_inversion(j.reshape(-1)[cand[walk]], m[walk], th[walk], rng)
    rest = ~walk
    values[rest] = rng.poisson(rng.standard_gamma(th[rest]) * (m[rest] / th[rest]))
    nonzero = values > 0
    pos = cand[nonzero]
    indptr = np.searchsorted(pos, np.arange(n_cells + 1, dtype=np.int64) * n_genes)
    return sp.csr_matrix((values[nonzero], gene[nonzero].astype(np.int32), indptr),
                         shape=(n_cells, n_genes))


def _nb_inversion(j, mu, theta, rng):
    """NB(mu, theta) counts by inversion, from the coarse uniforms ``j / 2**16`` refined."""
    s = (j + rng.random(j.size)) / _GRID  # uniform on [0, 1)
    ratio = mu / (mu + theta)
    survival = -np.expm1(theta * np.log1p(-ratio))  # P(X > 0), accurate for tiny means
    x = np.zeros(j.size, dtype=np.int64)
    act = np.flatnonzero(s < survival)
    survival, s, theta, ratio = survival[act], s[act], theta[act], ratio[act]
    pk = 1.0 - survival  # P(0)
    k = 0
    while act.size:  # the entries known to be > k
        k += 1
        x[act] = k
        pk = pk * ((k - 1 + theta) / k * ratio)  # P(k)
        survival = survival - pk  # P(X > k)
        # pk > 0: once the pmf underflows (k in the thousands) rounding is all that is left
        more = (s < survival) & (pk > 0)
        if not more.all():
            act, pk, survival, s, theta, ratio = (
                act[more], pk[more], survival[more], s[more], theta[more], ratio[more])
    return x


def nb_log_likelihood(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Negative-binomial log-likelihood with mean ``mu`` and inverse dispersion ``theta``."""
    eps = 1e-8
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


class AutoencoderModule(nn.Module):
    """MLP encoder and decoder with a negative-binomial or Gaussian head.

    Parameters
    ----------
    n_genes : int
    n_latent : int
    hidden : sequence of int
        Widths of the encoder's hidden layers; the decoder mirrors them.
    likelihood : {"nb", "gaussian"}
        ``"nb"``: the decoder gives gene proportions; the mean is library size x proportion and a
        gene-wise inverse dispersion is learned (as in scVI). ``"gaussian"``: the decoder gives the
        mean of standardised expression and a gene-wise log standard deviation is learned.
    dispersion : {"gene", "gene-cell"}
        ``"gene"``: one dispersion (or standard deviation) per gene. ``"gene-cell"``: a per-cell
        correction of it, read from the decoder's last hidden layer (scVI's "gene-cell"), so that
        a type's noise need not be the average type's.
    """

    def __init__(self, n_genes: int, n_latent: int = 16, hidden=(256, 128), likelihood: str = "nb",
                 dispersion: str = "gene"):
        super().__init__()
        if likelihood not in ("nb", "gaussian"):
            raise ValueError(f"likelihood must be 'nb' or 'gaussian'; got {likelihood!r}.")
        if dispersion not in ("gene", "gene-cell"):
            raise ValueError(f"dispersion must be 'gene' or 'gene-cell'; got {dispersion!r}.")
        self.likelihood = likelihood
        self.dispersion = dispersion
        # per-gene centre and scale of continuous input (set from the data; unused for counts)
        self.register_buffer("gene_mean", torch.zeros(n_genes))
        self.register_buffer("gene_scale", torch.ones(n_genes))
        hidden = list(hidden)
        self.encoder = nn.Sequential(mlp([n_genes, *hidden], final_activation=True),
                                     nn.Linear(hidden[-1], n_latent))
        self.decoder = nn.Sequential(mlp([n_latent, *hidden[::-1]], final_activation=True),
                                     nn.Linear(hidden[0], n_genes))
        # gene-wise dispersion (log theta) or log standard deviation
        self.gene_log_scale = nn.Parameter(torch.zeros(n_genes))
        if dispersion == "gene-cell":
            # zero-initialised: training starts from the gene-wise model
            self.scale_head = nn.Linear(hidden[0], n_genes)
            nn.init.zeros_(self.scale_head.weight)
            nn.init.zeros_(self.scale_head.bias)

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input: log1p of counts per ``TARGET_SUM``, or standardised values."""
        if self.likelihood == "nb":
            library = x.sum(1, keepdim=True).clamp_min(1.0)
            return torch.log1p(x / library * TARGET_SUM)
        return self.standardise(x)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.gene_mean) / self.gene_scale

    def encode(self, x_in: torch.Tensor) -> torch.Tensor:
        """``x_in`` is the transformed expression (log1p-normalised counts, or standardised values)."""
        return self.encoder(x_in)

    @torch.no_grad()
    def encode_observed(self, x: torch.Tensor, genes: torch.Tensor, *, n_iter: int = 8,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents of cells of which only this module's genes at positions ``genes`` were measured.

        ``x`` (n_cells, len(genes)) holds those genes' raw values (counts, or the input's scale
        for a Gaussian module). Encoding them with the other genes at zero would shift every
        latent: the encoder's input is normalised over all its genes, and the missing genes'
        weights see nothing. So the missing genes are imputed: drawn from the decoder's
        likelihood at the current latents (counts at the library size the measured genes imply),
        the measured genes kept as they are, and the cells re-encoded; ``n_iter`` times, from
        the zero-filled start. The draws make it a stochastic fixed point, so the latents
        returned are the mean over the last half of the iterations. Draws (not the decoder's
        mean) are imputed because the encoder was trained on log1p of counts, whose mean is far
        below log1p of the mean count for the sparse genes that make up most of a transcriptome.
        """
        n_genes = self.gene_log_scale.shape[0]
        genes = genes.to(x.device)
        full = torch.zeros(x.shape[0], n_genes, device=x.device, dtype=x.dtype)
        if self.likelihood == "gaussian":  # the mean, not 0, is the neutral value here
            full += self.gene_mean
        full[:, genes] = x
        z = self.encode(self.transform_input(full))
        observed = x.sum(1) if self.likelihood == "nb" else None
        kept = []
        for i in range(n_iter):
            library = None
            if observed is not None:
                share = F.softmax(self.decode(z), dim=-1)[:, genes].sum(1)
                library = observed / share.clamp_min(1e-6)
            full = self.sample_expression(z, library, generator)
            full[:, genes] = x
            z = self.encode(self.transform_input(full))
            if i >= n_iter // 2:
                kept.append(z)
        return torch.stack(kept).mean(0) if kept else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: gene logits (NB) or standardised means (Gaussian)."""
        return self.decoder(z)

    def _decode_with_scale(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output and the log dispersion (or log standard deviation) it comes with."""
        if self.dispersion == "gene":
            return self.decoder(z), self.gene_log_scale
        h = self.decoder[0](z)
        return self.decoder[1](h), self.gene_log_scale + self.scale_head(h)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, library: torch.Tensor | None):
        out, log_scale = self._decode_with_scale(z)
        if self.likelihood == "nb":
            mu = library[:, None] * F.softmax(out, dim=-1)
            return nb_log_likelihood(x, mu, torch.exp(log_scale)).sum(-1)
        return (-0.5 * ((x - out) / torch.exp(log_scale)) ** 2 - log_scale
                - 0.5 * math.log(2 * math.pi)).sum(-1)

    def cells_log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Log-likelihood of each cell of raw ``x`` at latent ``z``: counts at the cell's own
        library size (NB), or standardised values (Gaussian)."""
        if self.likelihood == "nb":
            return self.log_likelihood(x, z, x.sum(1))
        return self.log_likelihood(self.standardise(x), z, None)

    @torch.no_grad()
    def detection_offsets(self, x: torch.Tensor, *, min_cells: int = 5,
                          n_iter: int = 40) -> torch.Tensor:
        """Per gene: the shift of the log dispersion under which the model detects the gene in as
        many of the cells ``x`` (raw counts) as they do, at their own latents and libraries.

        A negative binomial fitted by likelihood explains the variation the latent misses by
        extra dispersion, and so draws too many zeros: re-drawn cells come back with about 10 %
        fewer detected genes than real cells of the same library size. For each gene, the shift
        is found by bisection (the expected share of cells with a nonzero count,
        ``mean(1 - (theta / (theta + mu)) ** theta)``, rises with ``theta``), within
        ``[-6, 8]``. Genes detected in fewer than ``min_cells`` cells keep their dispersion.
        """
        if self.likelihood != "nb":
            raise ValueError("detection_offsets needs the NB likelihood; this module is Gaussian.")
        z = self.encode(self.transform_input(x))
        mu, theta = self.nb_parameters(z, x.sum(1))
        detected = (x > 0).sum(0)
        observed = detected / x.shape[0]
        lo = torch.full_like(observed, -6.0)
        hi = torch.full_like(observed, 8.0)
        for _ in range(n_iter):
            mid = (lo + hi) / 2
            th = theta * torch.exp(mid)
            expected = 1 - torch.exp(th * (torch.log(th) - torch.log(th + mu)))
            below = expected.mean(0) < observed
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        offsets = (lo + hi) / 2
        return torch.where(detected >= min_cells, offsets, torch.zeros_like(offsets))

    @torch.no_grad()
    def nb_parameters(self, z: torch.Tensor, library: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NB means (n, n_genes) and inverse dispersions ((n_genes,), or (n, n_genes) per cell),
        for sampling (no gradient: the means are scaled in place, one block-sized tensor less)."""
        out, log_scale = self._decode_with_scale(z)
        return F.softmax(out, dim=-1).mul_(library[:, None]), torch.exp(log_scale)

    @torch.no_grad()
    def sample_counts(self, z: torch.Tensor, library: torch.Tensor,
                      generator: torch.Generator | None = None) -> sp.csr_matrix:
        """NB counts drawn at latents ``z``, as a CSR matrix of int64 (noise from ``generator``).

        On the CPU :func:`nb_counts` draws them (exact, from a numpy generator seeded from
        ``generator``), storing only nonzero counts; on a GPU torch draws them there as
        Gamma-Poisson from a GPU generator seeded the same way, and only the nonzero counts
        travel to the CPU. Same seed, same device: same cells.
        """
        if self.likelihood != "nb":
            raise ValueError("sample_counts needs the NB likelihood; this module is Gaussian.")
        mu, theta = self.nb_parameters(z, library)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        if mu.device.type == "cpu":
            return nb_counts(mu.numpy(), theta.numpy(), np.random.default_rng(seed))
        return csr_from_torch(_torch_gamma_poisson(mu, theta, seed))

    @torch.no_grad()
    def sample_expression(self, z: torch.Tensor, library: torch.Tensor | None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw expression from the likelihood given latents (noise comes from ``generator``).

        NB counts come from :meth:`sample_counts` on the CPU (then made dense); on a GPU torch
        draws them there as Gamma-Poisson, into a tensor on the GPU.
        """
        if self.likelihood == "nb":
            if z.device.type == "cpu":
                return torch.from_numpy(self.sample_counts(z, library, generator).toarray()
                                        .astype(np.float32))
            mu, theta = self.nb_parameters(z, library)
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            return _torch_gamma_poisson(mu, theta, seed)
        out, log_scale = self._decode_with_scale(z)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        noise = torch.from_numpy(rng.standard_normal(out.shape, dtype=np.float32)).to(out.device)
        return (out + torch.exp(log_scale) * noise) * self.gene_scale + self.gene_mean


def csr_from_torch(x: torch.Tensor) -> sp.csr_matrix:
    """A dense tensor of counts (on any device) as a CSR matrix of int64: made sparse where it
    is, so only its nonzero entries travel to the CPU."""
    rows, cols = x.nonzero(as_tuple=True)  # in row-major order
    values = x[rows, cols].cpu().numpy().astype(np.int64)
    indptr = np.searchsorted(rows.cpu().numpy(), np.arange(x.shape[0] + 1))
    return sp.csr_matrix((values, cols.cpu().numpy().astype(np.int32), indptr), shape=tuple(x.shape))


def _torch_gamma_poisson(mu: torch.Tensor, theta: torch.Tensor, seed: int) -> torch.Tensor:
    """NB counts (float) drawn by torch on ``mu``'s device, from a generator seeded by ``seed``."""
    gen = torch.Generator(device=mu.device).manual_seed(seed)
    return torch.poisson(torch._standard_gamma(theta.expand(mu.shape), generator=gen) * (mu / theta),
                         generator=gen)
