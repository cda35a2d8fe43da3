"""The linear recurrence of a ConvS5 layer, x_t = Λ̄ ⊙ x_{t-1} + (B̄ * u)_t, with a complex diagonal Λ̄ shared by
every pixel and time step: zero-order-hold discretisation, a parallel (chunked) scan for whole clips, the single
step for frame-by-frame generation, and a float64 step-by-step reference for tests.

Complex states are kept as real tensors with the real and imaginary parts on an axis of two before the P state
channels, (..., 2, P, pixels): the layout of a convolution's output with 2P channels (real parts, then imaginary
parts), which is how B̄ * u is computed and how C reads the state, so nothing is copied into complex tensors.
Each state channel at each pixel is an independent scalar recurrence; the convolutions stay outside this module.
"""

import math

import torch


def discretize_zoh(lambda_re, lambda_im, log_step, b_real, b_imag, clip_eigs: bool):
    """Zero-order hold of the continuous system (Λ, B̃) with step Δ = exp(log_step):
    Λ̄ = exp(ΔΛ), B̄ = (Λ̄ - 1) / Λ · B̃ (per state channel).

    lambda_re, lambda_im, log_step: (P,); b_real, b_imag: (P, U, k, k). With `clip_eigs`, Re Λ is clipped at -1e-4
    (as the official forward pass does). The products are formed in float64, where exp(iΔ Im Λ) with |Δ Im Λ| in
    the thousands keeps its phase.

    Returns ΔΛ (P,) complex128, the log of Λ̄ (from which the scan and the step take their powers), and B̄ as one
    real kernel (2P, U, k, k) in the parameters' dtype: the real parts' kernels, then the imaginary parts'.
    """
    real = lambda_re.double().clamp(max=-1e-4) if clip_eigs else lambda_re.double()
    lam = torch.complex(real, lambda_im.double())
    dt_lambda = torch.exp(log_step.double()) * lam
    gain = ((torch.exp(dt_lambda) - 1) / lam)[:, None, None, None]
    gain_re, gain_im = gain.real.to(b_real.dtype), gain.imag.to(b_real.dtype)
    b_bar = torch.cat([gain_re * b_real - gain_im * b_imag, gain_re * b_imag + gain_im * b_real])
    return dt_lambda, b_bar


def _times(z: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Complex product z * v, with v as (..., 2, P, pixels) and z complex, broadcastable to (..., P, 1)."""
    a, b = z.real.to(values.dtype), z.imag.to(values.dtype)
    re, im = values.unbind(-3)
    return torch.stack([a * re - b * im, b * re + a * im], dim=-3)


def _power_matrix(dt_lambda: torch.Tensor, size: int, stride: int, dtype) -> torch.Tensor:
    """The lower-triangular matrices [Λ̄^(stride (t - s))]_{t,s<size} of every state channel, each complex entry
    as the real 2x2 block [[a, -b], [b, a]]: (P, 2 size, 2 size), rows and columns ordered (step, re/im)."""
    steps = torch.arange(size, device=dt_lambda.device)
    lags = steps[:, None] - steps
    power = torch.exp(dt_lambda[:, None, None] * (stride * lags.clamp(min=0)).double()) * (lags >= 0)
    a, b = power.real, power.imag
    blocks = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=-2)  # (P, t, s, r', r)
    return blocks.transpose(2, 3).reshape(-1, 2 * size, 2 * size).to(dtype)


def convs5_scan(bu: torch.Tensor, dt_lambda: torch.Tensor, initial_state: torch.Tensor | None = None,
                chunk_size: int | None = None) -> torch.Tensor:  # fmt: skip
    """All states x_1..x_T of x_t = Λ̄ x_{t-1} + bu_t (x_0 = `initial_state`, or zero), without a loop over time.

    bu: (batch, frames, 2, P, pixels) real; dt_lambda: ΔΛ (P,) complex, Λ̄ = exp(ΔΛ); initial_state:
    (batch, 2, P, pixels). Returns (batch, frames, 2, P, pixels).

    The frames are cut into chunks of Q (about sqrt(frames)). Within a chunk, x is the product of the lower-
    triangular matrix [Λ̄^(t-s)] with the inputs (one batched real matmul per state channel, complex entries as
    2x2 blocks); the chunks' end states then follow the same recurrence with Λ̄^Q, solved by the same kind of
    matrix over chunks; each chunk finally adds the decayed state it was handed. Every power is exp(lag ΔΛ) taken
    directly in float64, never a running product nor a division by a power (which would overflow on long clips).
    """
    batch, frames, _, channels, pixels = bu.shape
    if initial_state is not None:  # x_1 = Λ̄ x_0 + bu_1: the initial state enters with the first input
        first = bu[:, :1] + _times(torch.exp(dt_lambda)[:, None], initial_state)[:, None]
        bu = torch.cat([first, bu[:, 1:]], dim=1)
    q = chunk_size or math.ceil(math.sqrt(frames))
    num_chunks = math.ceil(frames / q)
    if num_chunks * q > frames:  # trailing zero inputs change no earlier state
        bu = torch.cat([bu, bu.new_zeros(batch, num_chunks * q - frames, 2, channels, pixels)], dim=1)
    within = _power_matrix(dt_lambda, q, 1, bu.dtype)
    local = torch.einsum("pij,bcjpn->bcipn", within, bu.reshape(batch, num_chunks, 2 * q, channels, pixels))
    across = _power_matrix(dt_lambda, num_chunks, q, bu.dtype)
    ends = torch.einsum("pij,bjpn->bipn", across, local[:, :, -2:].reshape(batch, 2 * num_chunks, channels, pixels))
    ends = ends.view(batch, num_chunks, 2, channels, pixels)  # the state after each chunk
    handed = torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], dim=1)  # the state entering each chunk
    steps = torch.arange(1, q + 1, device=bu.device).double()
    decay = torch.exp(steps[:, None] * dt_lambda)[:, :, None]  # Λ̄^(i+1) for step i of a chunk: (Q, P, 1)
    states = local.view(batch, num_chunks, q, 2, channels, pixels) + _times(decay, handed[:, :, None])
    return states.reshape(batch, num_chunks * q, 2, channels, pixels)[:, :frames]


def convs5_step(bu: torch.Tensor, dt_lambda: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
    """One step x_t = Λ̄ x_{t-1} + bu_t: bu and state (batch, 2, P, pixels); a state of None is zero."""
    return bu if state is None else _times(torch.exp(dt_lambda)[:, None], state) + bu


def convs5_scan_ref(bu: torch.Tensor, dt_lambda: torch.Tensor, initial_state: torch.Tensor | None = None):
    """Slow float64 reference of `convs5_scan`: the recurrence one step at a time in complex128."""
    as_complex = lambda x: torch.complex(x.select(-3, 0), x.select(-3, 1)).to(torch.complex128)  # noqa: E731
    inputs, lambda_bar = as_complex(bu.double()), torch.exp(dt_lambda.to(torch.complex128))[:, None]
    state = torch.zeros_like(inputs[:, 0]) if initial_state is None else as_complex(initial_state.double())
    states = []
    for t in range(inputs.shape[1]):
        state = lambda_bar * state + inputs[:, t]
        states.append(torch.stack([state.real, state.imag], dim=-3))
    return torch.stack(states, dim=1)


__all__ = ["discretize_zoh", "convs5_scan", "convs5_step", "convs5_scan_ref"]
