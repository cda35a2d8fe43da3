"""Mamba1 and Mamba2 temporal mixers: pure-torch scans, single-step recurrence and fused-kernel dispatch.

Both mixers carry the parameter names, shapes, defaults and initialisation of `mamba_ssm.Mamba` and
`mamba_ssm.Mamba2`, so their state dicts load with no renaming. Every tensor here is (batch, time, channels);
the state math runs in float32 whatever the activation dtype.
"""

import functools
import importlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


@dataclass
class MambaState:
    """Recurrent state of one mixer after some prefix of a sequence.

    conv_state: (batch, conv_channels, d_conv), the last `d_conv` inputs of the causal convolution.
    ssm_state: float32; (batch, d_inner, d_state) for Mamba1, (batch, nheads, headdim, d_state) for Mamba2.
    """

    conv_state: torch.Tensor
    ssm_state: torch.Tensor


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


def inverse_softplus_dt(size, dt_min, dt_max, dt_init_floor, device=None):
    """Time-step bias as mamba_ssm initialises it: softplus^-1 of dt drawn log-uniformly in [dt_min, dt_max]."""
    dt = torch.exp(
        torch.rand(size, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    ).clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


def check_hidden_states(hidden_states, d_model: int, name: str = "hidden_states"):
    if (
        not isinstance(hidden_states, torch.Tensor)
        or hidden_states.dim() != 3
        or hidden_states.shape[-1] != d_model
        or hidden_states.shape[1] == 0
        or not hidden_states.is_floating_point()
    ):
        got = (
            f"shape {tuple(hidden_states.shape)} and dtype {hidden_states.dtype}"
            if isinstance(hidden_states, torch.Tensor)
            else type(hidden_states).__name__
        )
        raise ValueError(
            f"expected {name} of shape (batch, time, {d_model}) with time >= 1 and a floating dtype, got {got}"
        )


def check_state(state: MambaState, batch: int, conv_shape: tuple, ssm_shape: tuple):
    expected = {"conv_state": (batch, *conv_shape), "ssm_state": (batch, *ssm_shape)}
    for field, shape in expected.items():
        got = tuple(getattr(state, field).shape)
        if got != shape:
            raise ValueError(f"expected state.{field} of shape {shape}, got {got}")


class MambaMixerBase(nn.Module):
    """What both mixers share: mamba_ssm's initial values for the SSM parameters (the linear and convolution layers
    keep torch's default initialisation, as in mamba_ssm)."""

    def ssm_initial_values(self) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def reset_ssm_parameters(self):
        for name, value in self.ssm_initial_values().items():
            self.get_parameter(name).copy_(value)


class GatedRMSNorm(nn.Module):
    """RMSNorm of y * silu(z) over groups of channels (mamba_ssm's gated norm with norm_before_gate=False)."""

    def __init__(self, hidden_size: int, group_size: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.group_size = group_size
        self.eps = eps

    def forward(self, hidden_states, gate):
        """hidden_states, gate: (..., hidden_size). Computed in float32; returns float32."""
        gated = hidden_states.float() * F.silu(gate.float())
        groups = gated.unflatten(-1, (-1, self.group_size))
        groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)
        return groups.flatten(-2) * self.weight.float()


class Mamba1Mixer(MambaMixerBase):
    """Mamba (v1) selective-SSM mixer with the parameters of `mamba_ssm.Mamba`.

    forward: hidden_states (batch, time, d_model) -> (batch, time, d_model); with `state` it continues from a
    previous call, and with `return_state=True` it also returns the `MambaState` after the last step.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank="auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_kernels: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.dt_init = (dt_min, dt_max, dt_init_floor)
        self.use_kernels = use_kernels

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias, **factory
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state, dtype=torch.float32, device=device))
        self.D = nn.Parameter(torch.empty(self.d_inner, device=device))
        self.reset_ssm_parameters()

    def ssm_initial_values(self) -> dict:
        device = self.A_log.device
        # S4D-real A = -(1, ..., d_state) for every channel, kept in float32 like mamba_ssm.
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        dt_init_std = self.dt_rank**-0.5
        return {
            "A_log": torch.log(A),
            "D": torch.ones(self.d_inner, device=device),
            "dt_proj.weight": torch.empty_like(self.dt_proj.weight).uniform_(-dt_init_std, dt_init_std),
            "dt_proj.bias": inverse_softplus_dt(self.d_inner, *self.dt_init, device=device),
        }

    def zero_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        """The state before the first step."""
        device = device or self.A_log.device
        return MambaState(
            torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype or self.in_proj.weight.dtype),
            torch.zeros(batch_size, self.d_inner, self.d_state, device=device),
        )

    def forward(self, hidden_states, state: MambaState | None = None, return_state: bool = False):
        check_hidden_states(hidden_states, self.d_model)
        if state is None and not return_state:
            kernel = fused_kernel_for("mamba_inner_fn", hidden_states, self.use_kernels)
            if kernel is not None:
                return self._fused_forward(kernel, hidden_states)
        batch, seq_len, _ = hidden_states.shape
        conv_state, ssm_state = (None, None) if state is None else (state.conv_state, state.ssm_state)
        if state is not None:
            check_state(state, batch, (self.d_inner, self.d_conv), (self.d_inner, self.d_state))
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        x, conv_state = causal_conv1d(x, self.conv1d.weight, self.conv1d.bias, conv_state)
        x = F.silu(x)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float())
        A = -torch.exp(self.A_log.float())
        x = x.float()
        y, ssm_state = selective_scan(x, dt, A, B.float(), C.float(), ssm_state)
        y = (y + x * self.D.float()) * F.silu(z.float())
        out = self.out_proj(y.to(hidden_states.dtype))
        return (out, MambaState(conv_state, ssm_state)) if return_state else out

    def _fused_forward(self, kernel, hidden_states):
        return kernel(
            self.in_proj(hidden_states).transpose(1, 2),
            self.conv1d.weight,
            self.conv1d.bias,
            self.x_proj.weight,
            self.dt_proj.weight,
            self.out_proj.weight,
            self.out_proj.bias,
            -torch.exp(self.A_log.float()),
            None,
            None,
            self.D.float(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )


class Mamba2Mixer(MambaMixerBase):
    """Mamba2 (SSD) mixer with the parameters of `mamba_ssm.Mamba2` (gated RMSNorm, gate applied before the norm).

    forward: hidden_states (batch, time, d_model) -> (batch, time, d_model); with `state` it continues from a
    previous call, and with `return_state=True` it also returns the `MambaState` after the last step.
    `chunk_size=None` picks the SSD chunk length by sequence length (measured on CPU) and 256 for the kernel.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        A_init_range: tuple = (1, 16),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple = (0.0, float("inf")),
        conv_bias: bool = True,
        bias: bool = False,
        chunk_size: int | None = None,
        use_kernels: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"expand * d_model = {self.d_inner} must be a multiple of headdim = {headdim}")
        self.headdim, self.nheads = headdim, self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"the number of heads ({self.nheads}) must be a multiple of ngroups = {ngroups}")
        self.ngroups = ngroups
        self.dt_limit = tuple(dt_limit)
        self.dt_init = (dt_min, dt_max, dt_init_floor)
        self.A_init_range = tuple(A_init_range)
        self.chunk_size = chunk_size
        self.use_kernels = use_kernels
        self.conv_dim = self.d_inner + 2 * ngroups * d_state

        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.nheads, bias=bias, **factory)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1, bias=conv_bias, **factory
        )
        self.dt_bias = nn.Parameter(torch.empty(self.nheads, device=device))
        self.A_log = nn.Parameter(torch.empty(self.nheads, dtype=torch.float32, device=device))
        self.D = nn.Parameter(torch.empty(self.nheads, device=device))
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // ngroups, eps=1e-5, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        self.reset_ssm_parameters()

    def ssm_initial_values(self) -> dict:
        device = self.A_log.device
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*self.A_init_range)
        return {
            "dt_bias": inverse_softplus_dt(self.nheads, *self.dt_init, device=device),
            "A_log": torch.log(A),
            "D": torch.ones(self.nheads, device=device),
        }

    def zero_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        """The state before the first step."""
        device = device or self.A_log.device
        return MambaState(
            torch.zeros(batch_size, self.conv_dim, self.d_conv, device=device, dtype=dtype or self.in_proj.weight.dtype),
            torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device),
        )

    def forward(self, hidden_states, state: MambaState | None = None, return_state: bool = False):
        check_hidden_states(hidden_states, self.d_model)
        if state is None and not return_state:
            kernel = fused_kernel_for("mamba_split_conv1d_scan_combined", hidden_states, self.use_kernels)
            if kernel is not None:
                return self._fused_forward(kernel, hidden_states)
        batch, seq_len, _ = hidden_states.shape
        conv_state, ssm_state = (None, None) if state is None else (state.conv_state, state.ssm_state)
        if state is not None:
            check_state(state, batch, (self.conv_dim, self.d_conv), (self.nheads, self.headdim, self.d_state))
        z, xBC, dt = self.in_proj(hidden_states).split([self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC, conv_state = causal_conv1d(xBC, self.conv1d.weight, self.conv1d.bias, conv_state)
        x, B, C = F.silu(xBC).float().split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], -1)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        if self.dt_limit != (0.0, float("inf")):
            dt = dt.clamp(*self.dt_limit)
        A = -torch.exp(self.A_log.float())
        x = x.view(batch, seq_len, self.nheads, self.headdim)
        B = B.view(batch, seq_len, self.ngroups, self.d_state)
        C = C.view(batch, seq_len, self.ngroups, self.d_state)
        if seq_len == 1 and ssm_state is not None:
            y, ssm_state = ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], ssm_state)
            y = y[:, None]
        else:
            y, ssm_state = ssd_scan(x, dt, A, B, C, self.chunk_size, ssm_state)
        y = y + x * self.D.float()[:, None]
        y = self.norm(y.flatten(2), z)
        out = self.out_proj(y.to(hidden_states.dtype))
        return (out, MambaState(conv_state, ssm_state)) if return_state else out

    def _fused_forward(self, kernel, hidden_states):
        limit = {} if self.dt_limit == (0.0, float("inf")) else {"dt_limit": self.dt_limit}
        return kernel(
            self.in_proj(hidden_states),
            self.conv1d.weight.squeeze(1),
            self.conv1d.bias,
            self.dt_bias,
            -torch.exp(self.A_log.float()),
            D=self.D,
            chunk_size=self.chunk_size or 256,
            activation="silu",
            rmsnorm_weight=self.norm.weight,
            rmsnorm_eps=self.norm.eps,
            outproj_weight=self.out_proj.weight,
            outproj_bias=self.out_proj.bias,
            headdim=self.headdim,
            ngroups=self.ngroups,
            norm_before_gate=False,
            **limit,
        )
