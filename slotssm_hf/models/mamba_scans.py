"""The Mamba scans in plain torch, and where the fused `mamba_ssm` kernels are loaded and chosen: the math of the
mixers in `mamba_mixers` (as `mamba_ssm` keeps `ops/` apart from `modules/`).

- `selective_scan`: Mamba1's recurrence, one step at a time, with a hand-written backward that keeps only the state
  entering every chunk of about sqrt(T) steps.
- `ssd_scan` / `ssd_step`: Mamba2's chunked SSD algorithm and its single-step recurrence.
- `causal_conv1d`: the depthwise causal convolution both mixers start with, continuing from a state.
Tensors are (batch, time, ...); the state math runs in float32.
"""

import functools
import importlib
import math

import torch
import torch.nn.functional as F

# Device types on which the fused `mamba_ssm` kernels run (a module constant so tests can stand in for CUDA).
KERNEL_DEVICE_TYPES = frozenset({"cuda"})
_KERNEL_MODULES = {
    "mamba_inner_fn": "mamba_ssm.ops.selective_scan_interface",
    "mamba_split_conv1d_scan_combined": "mamba_ssm.ops.triton.ssd_combined",
}


@functools.cache
def load_fused_kernel(name: str):
    """The fused `mamba_ssm` function `name`, or None where it (or `causal_conv1d`, which it calls) won't import."""
    try:
        importlib.import_module("causal_conv1d")
        return getattr(importlib.import_module(_KERNEL_MODULES[name]), name)
    except Exception:  # not installed, or a build that fails to load on this machine
        return None


def fused_kernel_for(name: str, hidden_states: torch.Tensor, enabled: bool):
    """The one dispatch point: the fused kernel `name` when it may run on `hidden_states`, else None (torch path)."""
    if not enabled or hidden_states.device.type not in KERNEL_DEVICE_TYPES:
        return None
    return load_fused_kernel(name)


def auto_chunk_size(seq_len: int) -> int:
    """Chunk length of the SSD scan, measured on CPU: one chunk up to 64 steps, chunks of 64 beyond."""
    return seq_len if seq_len <= 64 else 64


def causal_conv1d(x, weight, bias, conv_state=None):
    """Depthwise causal convolution over time, continuing from `conv_state` (zeros when None).

    x: (batch, time, channels); weight: (channels, 1, d_conv). Returns the pre-activation output
    (batch, time, channels) and the new conv state (batch, channels, d_conv).
    """
    d_conv = weight.shape[-1]
    if conv_state is None:
        history = x.new_zeros(x.shape[0], d_conv - 1, x.shape[2])
    else:
        history = conv_state[..., 1:].transpose(1, 2).to(x.dtype)
    x = torch.cat([history, x], dim=1)
    # As a channels-last 2-D convolution, the (batch, time, channels) layout is kept on both sides: transposing to
    # (batch, channels, time) made every elementwise op after it, and their gradients, run on strided memory.
    out = F.conv2d(x.transpose(1, 2)[:, :, None], weight[:, :, None], bias, groups=x.shape[2])
    return out[:, :, 0].transpose(1, 2), x[:, -d_conv:].transpose(1, 2)


def _scan_steps(u, delta, A, B, C, state, start: int, stop: int, y=None):
    """Run the Mamba1 recurrence over steps [start, stop) from `state`; write y_t into `y` when given.
    Returns the states after each step."""
    states = []
    for t in range(start, stop):
        inflow = (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        state = torch.addcmul(inflow, torch.exp(delta[:, t, :, None] * A), state)
        if y is not None:
            y[:, t] = torch.bmm(state, C[:, t, :, None])[..., 0]
        states.append(state)
    return states


class SelectiveScan(torch.autograd.Function):
    """The Mamba1 recurrence with a hand-written backward pass. Autograd through the step loop would keep several
    (batch, d_inner, d_state) tensors per step (gigabytes at d_state 128) and allocate them afresh; here the
    forward keeps only the state entering every chunk of about sqrt(T) steps, and the backward recomputes one
    chunk's states at a time and walks it in reverse."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, initial_state):
        batch, seq_len, d_inner = u.shape
        chunk = max(16, math.isqrt(seq_len))
        y = u.new_empty(batch, seq_len, d_inner)
        state, entering = initial_state, []
        for start in range(0, seq_len, chunk):
            entering.append(state)
            state = _scan_steps(u, delta, A, B, C, state, start, min(start + chunk, seq_len), y)[-1]
        ctx.chunk = chunk
        ctx.save_for_backward(u, delta, A, B, C, *entering)
        return y, state

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_last):
        u, delta, A, B, C, *entering = ctx.saved_tensors
        seq_len, chunk = u.shape[1], ctx.chunk
        grad_state = torch.zeros_like(entering[0]) if grad_last is None else grad_last.clone()
        grad_y = torch.zeros_like(u) if grad_y is None else grad_y
        grads = {name: torch.zeros_like(t) for name, t in (("u", u), ("delta", delta), ("B", B), ("C", C))}
        grad_A = torch.zeros_like(A)
        for index in reversed(range(len(entering))):
            start = index * chunk
            states = [entering[index], *_scan_steps(u, delta, A, B, C, entering[index], start, min(start + chunk, seq_len))]
            for t in reversed(range(start, start + len(states) - 1)):
                state, previous = states[t - start + 1], states[t - start]
                # y_t = state . C_t
                grads["C"][:, t] = torch.bmm(grad_y[:, t, None, :], state)[:, 0]
                grad_state.addcmul_(grad_y[:, t, :, None], C[:, t, None, :])
                # state = exp(delta_t A) * previous + (delta_t u_t) B_t
                decay = torch.exp(delta[:, t, :, None] * A)
                grad_exponent = grad_state * previous * decay
                grad_A.add_(torch.einsum("bdn,bd->dn", grad_exponent, delta[:, t]))
                grad_inflow = torch.bmm(grad_state, B[:, t, :, None])[..., 0]  # d loss / d (delta_t u_t)
                grads["B"][:, t] = torch.bmm((delta[:, t] * u[:, t])[:, None, :], grad_state)[:, 0]
                grads["delta"][:, t] = (grad_exponent * A).sum(-1) + grad_inflow * u[:, t]
                grads["u"][:, t] = grad_inflow * delta[:, t]
                grad_state.mul_(decay)
        return grads["u"], grads["delta"], grad_A, grads["B"], grads["C"], grad_state


def selective_scan(u, delta, A, B, C, initial_state=None):
    """Mamba1 selective scan, float32: h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, y_t = h_t C_t.

    u, delta: (batch, time, d_inner); A: (d_inner, d_state); B, C: (batch, time, d_state);
    initial_state: (batch, d_inner, d_state) or None. Returns y (batch, time, d_inner) and the last state.

    Mamba1's decay differs per channel and per state, so no matrix (SSD) form exists; the stable parallel scans
    are memory-bound on a CPU and several times slower than this recurrence, which forms exp(delta A) one step
    at a time instead of materialising it for the whole sequence (see the project's CPU measurements), and
    whose backward pass (`SelectiveScan`) keeps memory to about 2 sqrt(T) states.
    """
    if initial_state is None:
        initial_state = u.new_zeros(u.shape[0], u.shape[2], A.shape[-1])
    return SelectiveScan.apply(u, delta, A, B, C, initial_state)


def ssd_scan(x, dt, A, B, C, chunk_size=None, initial_state=None):
    """Mamba2 scan by the chunked SSD algorithm, float32, with a scalar decay per head.

    S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T and y_t = S_t C_t, for each head h.
    x: (batch, time, nheads, headdim); dt: (batch, time, nheads) after softplus; A: (nheads,);
    B, C: (batch, time, ngroups, d_state), shared by the nheads // ngroups heads of a group;
    initial_state: (batch, nheads, headdim, d_state) or None. Returns y like x (without the D skip) and the
    last state. Within a chunk the output is a masked (time x time) product; between chunks only the state
    is carried, so the Python loop runs over chunks, never over time steps.
    """
    batch, seq_len, nheads, headdim = x.shape
    ngroups, d_state = B.shape[-2:]
    per_group = nheads // ngroups
    chunk = chunk_size or auto_chunk_size(seq_len)
    num_chunks = -(-seq_len // chunk)
    pad = num_chunks * chunk - seq_len
    if pad:  # dt = 0 on padded steps: they neither decay the state nor add to it
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))

    # Layout (batch, chunk, group, ...) so every contraction below is one batched matmul.
    x = x.view(batch, num_chunks, chunk, ngroups, per_group, headdim)
    dt = dt.view(batch, num_chunks, chunk, ngroups, per_group).permute(0, 1, 3, 4, 2)  # (b, c, g, hg, Q)
    B = B.view(batch, num_chunks, chunk, ngroups, d_state).transpose(2, 3)  # (b, c, g, Q, n)
    C = C.view(batch, num_chunks, chunk, ngroups, d_state).transpose(2, 3)
    A_cumsum = torch.cumsum(dt * A.view(ngroups, per_group, 1), dim=-1)  # (b, c, g, hg, Q)
    x_dt = x.permute(0, 1, 3, 4, 2, 5) * dt[..., None]  # (b, c, g, hg, Q, p)

    # Within chunks: y_i = sum_{j <= i} (C_i . B_j) exp(A_cumsum_i - A_cumsum_j) dt_j x_j.
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).tril()
    decay = (A_cumsum[..., :, None] - A_cumsum[..., None, :]).masked_fill(~causal, -math.inf).exp()
    # Masked, not only multiplied by a zero decay: a NaN or inf B_j would otherwise reach the rows i < j (0 * NaN).
    scores = (C @ B.transpose(-1, -2)).masked_fill(~causal, 0)[:, :, :, None] * decay  # (b, c, g, hg, Q, Q)
    finite = torch.isfinite(x_dt)
    if finite.all():
        y = scores @ x_dt
    else:
        # The zero scores above the diagonal would carry a non-finite x_j into every row i < j (0 * NaN): the
        # product takes zeros there, and the rows from j on become NaN, as the recurrence makes them.
        reached = (~finite).cumsum(dim=-2) > 0
        y = (scores @ x_dt.masked_fill(~finite, 0)).masked_fill(reached, math.nan)

    # State each chunk adds by its end: sum_j exp(A_cumsum_end - A_cumsum_j) dt_j x_j B_j^T.
    to_end = torch.exp(A_cumsum[..., -1:] - A_cumsum)  # (b, c, g, hg, Q)
    x_to_end = (x_dt * to_end[..., None]).transpose(3, 4).reshape(batch, num_chunks, ngroups, chunk, -1)
    chunk_states = (x_to_end.transpose(-1, -2) @ B).view(batch, num_chunks, ngroups, per_group, headdim, d_state)

    # Carry the state across chunks; keep the state entering each chunk.
    state = (
        initial_state.view(batch, ngroups, per_group, headdim, d_state)
        if initial_state is not None
        else x.new_zeros(batch, ngroups, per_group, headdim, d_state)
    )
    chunk_decay = torch.exp(A_cumsum[..., -1])[..., None, None]  # (b, c, g, hg, 1, 1)
    entering = []
    # unbind, not indexing: autograd would give every indexed chunk a gradient the size of the whole tensor, which
    # makes the backward pass quadratic in the number of chunks.
    for decay, added in zip(chunk_decay.unbind(1), chunk_states.unbind(1)):
        entering.append(state)
        state = decay * state + added
    entering = torch.stack(entering, dim=1)  # (b, c, g, hg, p, n)

    # Contribution of the entering state: exp(A_cumsum_i) C_i S.
    carried = C @ entering.permute(0, 1, 2, 5, 3, 4).reshape(batch, num_chunks, ngroups, d_state, -1)
    carried = carried.view(batch, num_chunks, ngroups, chunk, per_group, headdim).transpose(3, 4)
    y = y + carried * torch.exp(A_cumsum)[..., None]

    y = y.permute(0, 1, 4, 2, 3, 5).reshape(batch, num_chunks * chunk, nheads, headdim)
    return y[:, :seq_len], state.reshape(batch, nheads, headdim, d_state)


def ssd_step(x, dt, A, B, C, state):
    """One Mamba2 recurrence step, float32. x: (batch, nheads, headdim); dt: (batch, nheads);
    B, C: (batch, ngroups, d_state); state: (batch, nheads, headdim, d_state). Returns y like x, new state."""
    batch, nheads, headdim = x.shape
    ngroups, d_state = B.shape[-2:]
    state = state.view(batch, ngroups, nheads // ngroups, headdim, d_state)
    dt = dt.view(batch, ngroups, -1)
    x_dt = (x.view(batch, ngroups, -1, headdim) * dt[..., None])[..., None]
    state = torch.addcmul(x_dt * B[:, :, None, None, :], torch.exp(dt * A.view(ngroups, -1))[..., None, None], state)
    y = (state.flatten(2, 3) @ C[..., None]).view(batch, nheads, headdim)
    return y, state.view(batch, nheads, headdim, d_state)
