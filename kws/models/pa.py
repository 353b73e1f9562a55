"""Piecewise approximation (PA): multi-bit binary bases for weights and activations.

After Zhu, Al-Ars & Pan, "Towards lossless binary convolutional neural networks using piecewise
approximation" (ECAI 2020). PA approximates a binary convolution's real weights by M bases and
its activations by N bases, each base a {0, 1} tensor with one scaling coefficient, so that the
convolution becomes M x N bitwise convolutions whose outputs are summed with the merged
coefficients phi = alpha_i * beta_j (the paper's eq. 15-19).

Only the paper's abstract could be consulted while this was written (the full text was not
reachable from here), so the formulas below are the scheme as the issue (#41) describes it,
written out in one consistent form; where a choice had to be made it is said so.

Bases: thermometer steps
------------------------
A staircase with K jumps at sorted endpoints p_1 < ... < p_K is written with {0, 1} bases

    Q(x) = c_0 + sum_k h_k * H(x - p_k),       H(z) = 1 if z >= 0 else 0          (1)

(H(0) = 1 as Larq's and LCE's sign map 0 to +1). The "one indicator per piece" form spans the
same staircases (the indicator of the piece [p_k, p_k+1) is H(x - p_k) - H(x - p_k+1)); the
step form is used because each base is then a single comparison, i.e. one sign bit that LCE
bit-packs directly, and K = 1 is the 1-bit sign. PA fixes the offset at c_0 = -(sum_k h_k) / 2,
i.e. the staircase is odd about its middle level and, with H = (sign + 1) / 2,

    Q(x) = sum_k (h_k / 2) * sign(x - p_k).                                          (2)

Weights (M bases, :class:`PAWeight`): endpoints fixed from the layer's mean mu and standard
deviation sigma (recomputed from the latent weights at every step, not trained),

    u_i = mu + sigma * t_i,    t_i = -2 + 4 (i - 1/2) / M,    i = 1..M               (3)

i.e. uniform in +-2 sigma (the paper tabulates its endpoints for M = 8 in its Table 1, "near
uniform in +-2 std"; that table was not available here, so (3) is the uniform rule it
approximates: for M = 8, t = +-0.25, +-0.75, +-1.25, +-1.75). The jumps are equal,
alpha_i = 2 / M, so the levels are -1, -1 + 2/M, ..., +1: W_PA approximates the normalised
weight clip((W - mu) / (2 sigma), -1, 1). A positive per-layer scale is absorbed by the batch
norm after the convolution (and commutes with QuickNet's ReLU); normalising keeps the
convolution's outputs on the scale of the 1-bit convolution's (+-K). Dropping mu from the
levels (as ABC-Net does) keeps (2) free of a constant kernel term, which would need a box sum
of the activations at inference.

Activations (N bases, :class:`PAActivation`): endpoints v_j and coefficients beta_j are
trainable scalars per layer, initialised to v_j = -1 + (2j - 1) / N and beta_j = 2 / N, so
that at initialisation A_PA is the N-step staircase of the hard tanh clip(x, -1, 1) (the
real-valued twin's activation), and N = 1 is exactly sign(x):

    A_PA(x) = sum_j beta_j * (H(x - v_j) - 1/2) = sum_j (beta_j / 2) * sign(x - v_j)     (4)

Backward (the paper's Figures 1-2: piecewise-linear slopes). Each jump k is spread linearly over
its own cell [e_k-1, e_k], where the inner cell edges are the midpoints between neighbouring
endpoints, e_k = (p_k + p_k+1) / 2, and the outer edges mirror the nearest inner one
(e_0 = 2 p_1 - e_1, e_K = 2 p_K - e_K-1); with one endpoint the cell is [p - w, p + w] for a
given half width w. The surrogate is the continuous piecewise-linear function through the
staircase's levels at the cell edges; its slope

    dQ/dx = h_k / (e_k - e_k-1)   for x in cell k,     0 outside [e_0, e_K]          (5)

is the gradient that passes to x. Weights: the cells are [mu - 2 sigma, mu + 2 sigma] cut into
M equal parts, so dW_PA/dW = 1 / (2 sigma) there and 0 outside (mu, sigma are not
differentiated). Activations: uniform endpoints give slope 1 on [-1, 1], the hard tanh's; with
N = 1, beta = 2 and w = 1 the surrogate is Larq's SteSign(clip_value=1): identical forward and
backward. The trainable endpoints and coefficients get

    dA/dbeta_j = sign(x - v_j) / 2   (exact),   dA/dv_j = -beta_j / (e_j - e_j-1) on cell j.

Convolution (eq. 15-19): conv is bilinear, so with W_PA = sum_i a_i t_i and A_PA = sum_j b_j s_j
(t_i, s_j in {-1, +1}, a_i = alpha_i / 2 = 1/M, b_j = beta_j / 2)

    conv(A_PA, W_PA) = sum_ij (a_i b_j) conv(s_j, t_i)                                  (6)

M x N binary convolutions (LCE ``LceBconv2d``) with merged coefficients phi_ij = a_i b_j =
alpha_i beta_j / 4, which LCE folds into each bconv's output multiplier. The {0, 1} bases enter
through the identity a = (s + 1) / 2: sum(a * w) = (sum(s * w) + sum(w)) / 2, a scale of 1/2
and a bias of sum(w) / 2 per output channel; the offsets c_0 in (2)/(4) are exactly the biases
that cancel it, which is why PA's staircases have them. Padding: "same" padding pads every
+-1 base with +1 (LCE's fast path), i.e. the padded A_PA is its top level sum_j b_j.

:class:`PAConv2D` is a Larq ``QuantConv2D`` that trains with (6)'s left side (one convolution
of the two staircases: as cheap as a 1-bit layer) and infers (``training=False``: evaluation,
export) with its right side, the M x N sign convolutions that LCE converts into ``LceBconv2d``.
"""
from __future__ import annotations

import bnnkws.frontend  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import larq as lq
import numpy as np
import tensorflow as tf

MAX_BASES = 8  # the paper's largest weight setting (M = 8)
_EPS = 1e-8


def weight_endpoints(m: int) -> np.ndarray:
    """The t_i of eq. (3): ``m`` endpoints uniform in (-2, 2) in units of sigma (0 for m = 1)."""
    m = int(m)
    return (-2.0 + 4.0 * (np.arange(1, m + 1) - 0.5) / m).astype("float32")


def activation_init(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial ``(v, beta)`` of eq. (4): the n-step staircase of clip(x, -1, 1)."""
    n = int(n)
    v = (-1.0 + (2.0 * np.arange(1, n + 1) - 1.0) / n).astype("float32")
    return v, np.full(n, 2.0 / n, dtype="float32")


# ---------------------------------------------------------------------------------------------
# the piecewise-linear backward (eq. 5)
# ---------------------------------------------------------------------------------------------
def cell_edges(p, half_width=None, lo=None, hi=None):
    """Edges e_0..e_K of the cells around sorted endpoints ``p`` (K,) (see eq. 5)."""
    p = tf.convert_to_tensor(p)
    k = int(p.shape[0])
    if k == 1:
        lo = p[0] - half_width if lo is None else lo
        hi = p[0] + half_width if hi is None else hi
        return tf.stack([lo, hi])
    inner = (p[1:] + p[:-1]) * 0.5
    lo = 2.0 * p[0] - inner[0] if lo is None else lo
    hi = 2.0 * p[-1] - inner[-1] if hi is None else hi
    return tf.concat([tf.reshape(lo, [1]), inner, tf.reshape(hi, [1])], axis=0)


def _cells(x, edges):
    """``(index, inside)``: the cell of each element of ``x`` and whether it is in [e_0, e_K]."""
    k = int(edges.shape[0]) - 1
    idx = tf.zeros_like(x, dtype=tf.int32)
    for j in range(1, k):
        idx += tf.cast(x >= edges[j], tf.int32)
    inside = tf.logical_and(x >= edges[0], x <= edges[-1])
    return idx, inside


def piecewise_slope(x, edges, steps):
    """Eq. (5): slope of the surrogate at ``x`` (steps h_k over cell widths; 0 outside)."""
    widths = tf.maximum(edges[1:] - edges[:-1], _EPS)
    slopes = steps / widths
    idx, inside = _cells(x, edges)
    return tf.where(inside, tf.gather(slopes, idx), tf.zeros_like(x))


def staircase(x, p, coefs):
    """Eq. (2)/(4) forward: ``sum_k coefs_k * sign(x - p_k)`` (coefs = h_k / 2)."""
    out = None
    for k in range(int(p.shape[0])):
        term = coefs[k] * lq.math.sign(x - p[k])
        out = term if out is None else out + term
    return out


def pa_weight(w, m: int):
    """Eq. (3) forward and eq. (5) backward for a latent kernel ``w`` with ``m`` bases."""
    t = tf.constant(weight_endpoints(m))

    @tf.custom_gradient
    def _call(w):
        mu = tf.stop_gradient(tf.reduce_mean(w))
        sigma = tf.stop_gradient(tf.math.reduce_std(w)) + _EPS
        u = mu + sigma * t
        coefs = tf.fill([m], 1.0 / m)
        y = staircase(w, u, coefs)

        def grad(dy):
            edges = cell_edges(u, lo=mu - 2.0 * sigma, hi=mu + 2.0 * sigma)
            return dy * piecewise_slope(w, edges, 2.0 * coefs)

        return y, grad

    return _call(w)


def pa_activation(x, v, beta, half_width: float = 1.0):
    """Eq. (4) forward and eq. (5) backward, with gradients for ``v`` and ``beta``."""

    @tf.custom_gradient
    def _call(x, v, beta):
        y = staircase(x, v, beta * 0.5)

        def grad(dy):
            order = tf.argsort(v)
            vs, bs = tf.gather(v, order), tf.gather(beta, order)
            edges = cell_edges(vs, half_width=half_width)
            widths = tf.maximum(edges[1:] - edges[:-1], _EPS)
            slopes = bs / widths
            idx, inside = _cells(x, edges)
            dx = dy * tf.where(inside, tf.gather(slopes, idx), tf.zeros_like(x))
            n = int(v.shape[0])
            # dA/dv_j = -slope_j on cell j (the ramp moves with its endpoint)
            in_cell = [tf.reduce_sum(tf.where(tf.logical_and(inside, tf.equal(idx, j)), dy,
                                              tf.zeros_like(dy))) for j in range(n)]
            dv_sorted = -tf.stack(in_cell) * slopes
            dv = tf.gather(dv_sorted, tf.argsort(order))
            # dA/dbeta_j = sign(x - v_j) / 2, exactly
            dbeta = tf.stack([tf.reduce_sum(dy * 0.5 * lq.math.sign(x - v[j]))
                              for j in range(n)])
            return dx, dv, dbeta

        return y, grad

    return _call(x, v, beta)


# ---------------------------------------------------------------------------------------------
# quantizers (Larq idiom: usable as input_quantizer / kernel_quantizer of any Quant* layer)
# ---------------------------------------------------------------------------------------------
def _check_bases(n, what):
    if not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= MAX_BASES:
        raise ValueError(f"{what}: number of bases must be an integer in 1..{MAX_BASES}, "
                         f"got {n!r}")
    return int(n)


@lq.utils.register_alias("pa_weight")
@lq.utils.register_keras_custom_object  # by class name, as larq's own (h5 model files)
@tf.keras.utils.register_keras_serializable(package="bnnkws")
class PAWeight(lq.quantizers.Quantizer):
    r"""PA kernel quantizer with ``bases`` = M {0, 1} bases (module docstring, eq. 3 and 5).

    \\[ W_{PA} = \sum_{i=1}^{M} \tfrac{1}{M}\,\mathrm{sign}(W - \mu - \sigma t_i),\quad
        t_i = -2 + 4(i - \tfrac12)/M \\]

    with mu, sigma the mean and standard deviation of the latent kernel; the gradient is
    1 / (2 sigma) within mu +- 2 sigma and 0 outside. ``precision`` is M, so Bop (which takes
    variables of precision 1) leaves a multi-base kernel's latent weights to the real-valued
    optimizer: their magnitudes place them between the endpoints.
    """

    def __init__(self, bases: int = 2, **kwargs):
        self.bases = _check_bases(bases, "PAWeight")
        self.precision = self.bases
        super().__init__(**kwargs)

    def call(self, inputs):
        return pa_weight(inputs, self.bases)

    def decompose(self, w) -> list:
        """``[(a_i, t_i)]`` of eq. (6): coefficient and +-1 kernel base (forward only)."""
        w = tf.convert_to_tensor(w)
        mu = tf.reduce_mean(w)
        sigma = tf.math.reduce_std(w) + _EPS
        return [(1.0 / self.bases, lq.math.sign(w - (mu + sigma * float(t))))
                for t in weight_endpoints(self.bases)]

    def get_config(self):
        return {**super().get_config(), "bases": self.bases}


@lq.utils.register_alias("pa_activation")
@lq.utils.register_keras_custom_object
@tf.keras.utils.register_keras_serializable(package="bnnkws")
class PAActivation(lq.quantizers.Quantizer):
    r"""PA input quantizer with ``bases`` = N {0, 1} bases (module docstring, eq. 4 and 5).

    \\[ A_{PA} = \sum_{j=1}^{N} \beta_j \left(H(x - v_j) - \tfrac12\right)
               = \sum_{j=1}^{N} \tfrac{\beta_j}{2}\,\mathrm{sign}(x - v_j) \\]

    with trainable per-layer endpoints ``v`` and coefficients ``beta`` (weights
    ``pa_thresholds`` and ``pa_scales``), initialised to the N-step staircase of
    clip(x, -1, 1). ``half_width`` is the surrogate's half width when N = 1 (with N = 1 and the
    initial values this quantizer is Larq's ``SteSign(clip_value=half_width)``).
    """

    def __init__(self, bases: int = 2, half_width: float = 1.0, **kwargs):
        self.bases = _check_bases(bases, "PAActivation")
        self.precision = self.bases
        self.half_width = float(half_width)
        super().__init__(**kwargs)

    def build(self, input_shape):
        v, beta = activation_init(self.bases)
        self.thresholds = self.add_weight(
            "pa_thresholds", shape=(self.bases,),
            initializer=tf.keras.initializers.Constant(v), trainable=True)
        self.scales = self.add_weight(
            "pa_scales", shape=(self.bases,),
            initializer=tf.keras.initializers.Constant(beta), trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        return pa_activation(inputs, tf.convert_to_tensor(self.thresholds),
                             tf.convert_to_tensor(self.scales), self.half_width)

    def decompose(self, x) -> list:
        """``[(b_j, s_j)]`` of eq. (6): coefficient beta_j / 2 and +-1 activation base."""
        return [(self.scales[j] * 0.5, lq.math.sign(x - self.thresholds[j]))
                for j in range(self.bases)]

    def padded_value(self):
        """The value "same" padding gives A_PA: every +-1 base padded with +1."""
        return tf.reduce_sum(self.scales) * 0.5

    def get_config(self):
        return {**super().get_config(), "bases": self.bases, "half_width": self.half_width}


def _bases_of(quantizer) -> int:
    return int(quantizer.bases) if isinstance(quantizer, (PAWeight, PAActivation)) else 1


# ---------------------------------------------------------------------------------------------
# the convolution
# ---------------------------------------------------------------------------------------------
@lq.utils.register_keras_custom_object
@tf.keras.utils.register_keras_serializable(package="bnnkws")
class PAConv2D(lq.layers.QuantConv2D):
    """A ``QuantConv2D`` with PA quantizers that infers as M x N binary convolutions (eq. 6).

    Either quantizer may be PA (:class:`PAWeight`, :class:`PAActivation`) or an ordinary 1-bit
    Larq quantizer (one base with coefficient 1). ``training=True`` computes one convolution of
    the quantized input with the quantized kernel (the quantizers' custom gradients apply);
    otherwise the layer sums the M x N convolutions of +-1 activation bases with +-1 kernel
    bases, each times its merged coefficient, which is the same function and the graph LCE
    converts into M x N ``LceBconv2d`` ops. "same" padding needs ``pad_values=1.0``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.input_quantizer, PAActivation) and not self._is_native_padding \
                and float(self.pad_values) != 1.0:
            raise ValueError(f"{self.name}: PA activations pad every +-1 base with +1; "
                             f"pad_values must be 1.0, got {self.pad_values}")

    @property
    def pa_bases(self) -> tuple[int, int]:
        """``(M, N)``: kernel and input bases (1 for an ordinary 1-bit quantizer)."""
        return _bases_of(self.kernel_quantizer), _bases_of(self.input_quantizer)

    def build(self, input_shape):
        super().build(input_shape)
        q = self.input_quantizer
        if isinstance(q, PAActivation) and not q.built:
            q.build(input_shape)  # its variables exist before the first (inference) call

    def call(self, inputs, training=None):
        if training is None or isinstance(training, (bool, int)):
            return self._fused(inputs) if training else self._decomposed(inputs)
        return tf.__internal__.smart_cond.smart_cond(
            training, lambda: self._fused(inputs), lambda: self._decomposed(inputs))

    def _fused(self, inputs):
        q = self.input_quantizer
        x = q(inputs) if q is not None else inputs
        with lq.context.quantized_scope(True):
            if self._is_native_padding:
                return tf.keras.layers.Conv2D.call(self, x)
            pad = q.padded_value() if isinstance(q, PAActivation) else self.pad_values
            x = tf.pad(x, self._get_padding_same(x), constant_values=pad)
            with lq.utils.patch_object(self, "padding", "valid"):
                return tf.keras.layers.Conv2D.call(self, x)

    def _decomposed(self, inputs):
        q, kq = self.input_quantizer, self.kernel_quantizer
        acts = q.decompose(inputs) if isinstance(q, PAActivation) else [(1.0, q(inputs))]
        latent = getattr(self.kernel, "latent_variable", self.kernel)
        kernels = kq.decompose(latent) if isinstance(kq, PAWeight) else [(1.0, kq(latent))]
        pads = None if self._is_native_padding else self._get_padding_same(inputs)
        out = None
        for b, s in acts:
            if pads is not None:
                s = tf.pad(s, pads, constant_values=self.pad_values)
            for a, t in kernels:
                y = tf.nn.conv2d(s, t, strides=self.strides,
                                 padding="VALID" if pads is not None else self.padding.upper(),
                                 dilations=self.dilation_rate) * (a * b)
                out = y if out is None else out + y
        return self.activation(out) if self.activation is not None else out


def is_pa_layer(layer) -> bool:
    return isinstance(layer, PAConv2D)


def pa_layers(model) -> list:
    """The :class:`PAConv2D` layers of a model, nested stage models included."""
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out += pa_layers(layer)
        elif isinstance(layer, PAConv2D):
            out.append(layer)
    return out


def twin_weights(model) -> list:
    """``model.get_weights()`` without the PA activation parameters (v, beta).

    A PA model's real-valued twin (``binary=False``) is the same graph without quantizers, so
    its weights are these, in this order: the latent kernels carry over, the staircase
    parameters have no counterpart.
    """
    skip = {id(w) for layer in pa_layers(model) if isinstance(layer.input_quantizer, PAActivation)
            for w in layer.input_quantizer.weights}
    return [w.numpy() for w in model.weights if id(w) not in skip]


def layer_cost(layer) -> dict:
    """Counts of one :class:`PAConv2D` for :mod:`describe` (larq's profile has no PA MACs).

    M x N binary MACs per real MAC; the kernel is stored as M bit planes (M bits per weight),
    its M x N coefficients and the 2 N activation parameters as 32-bit numbers.
    """
    m, n = layer.pa_bases
    kernel = int(np.prod(layer.kernel.shape))
    pixels = int(np.prod(layer.output_shape[1:3]))
    extra = 2 * n if isinstance(layer.input_quantizer, PAActivation) else 0
    return {"binary_macs": m * n * kernel * pixels, "real_macs": 0, "binary_params": kernel,
            "real_params": extra, "binary_size_bits": m * kernel + 32 * extra,
            "float32_size_bits": 32 * (kernel + extra)}


__all__ = ["PAWeight", "PAActivation", "PAConv2D", "pa_weight", "pa_activation",
           "weight_endpoints", "activation_init", "cell_edges", "piecewise_slope",
           "pa_layers", "twin_weights", "layer_cost", "MAX_BASES"]
