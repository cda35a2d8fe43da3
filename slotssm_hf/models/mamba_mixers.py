"""Mamba1 and Mamba2 temporal mixers: the modules, holding the parameters and choosing the path; their scans live
in `mamba_scans`.

Both mixers carry the parameter names, shapes, defaults and initialisation of `mamba_ssm.Mamba` and
`mamba_ssm.Mamba2`, so their state dicts load with no renaming. Every tensor here is (batch, time, channels);
the state math runs in float32 whatever the activation dtype.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .mamba_scans import causal_conv1d, fused_kernel_for, selective_scan, ssd_scan, ssd_step


@dataclass
class MambaState:
    """Recurrent state of one mixer after some prefix of a sequence.

    conv_state: (batch, conv_channels, d_conv), the last `d_conv` inputs of the causal convolution.
    ssm_state: float32; (batch, d_inner, d_state) for Mamba1, (batch, nheads, headdim, d_state) for Mamba2.
    """

    conv_state: torch.Tensor
    ssm_state: torch.Tensor


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


class MambaMixerBase(nn.Module):
    """What both mixers share: the forward's dispatch (fused kernel for a whole sequence without state, else the torch
    scan continuing from `state`), the state's shapes and its zeros, and mamba_ssm's initial values for the SSM
    parameters (the linear and convolution layers keep torch's default initialisation, as in mamba_ssm).

    A subclass sets `fused_kernel_name`, `conv_state_shape` and `ssm_state_shape` (per sequence), and implements
    `ssm_initial_values`, `_torch_forward` and `_fused_forward`.
    """

    fused_kernel_name: str
    conv_state_shape: tuple
    ssm_state_shape: tuple

    def forward(self, hidden_states, state: MambaState | None = None, return_state: bool = False):
        """hidden_states (batch, time, d_model) -> (batch, time, d_model); with `state` it continues from a previous
        call, and with `return_state=True` it also returns the `MambaState` after the last step."""
        check_hidden_states(hidden_states, self.d_model)
        if state is None and not return_state:
            kernel = fused_kernel_for(self.fused_kernel_name, hidden_states, self.use_kernels)
            if kernel is not None:
                return self._fused_forward(kernel, hidden_states)
        if state is not None:
            batch = hidden_states.shape[0]
            expected = {"conv_state": (batch, *self.conv_state_shape), "ssm_state": (batch, *self.ssm_state_shape)}
            for field, shape in expected.items():
                got = tuple(getattr(state, field).shape)
                if got != shape:
                    raise ValueError(f"expected state.{field} of shape {shape}, got {got}")
        conv_state, ssm_state = (None, None) if state is None else (state.conv_state, state.ssm_state)
        out, state = self._torch_forward(hidden_states, conv_state, ssm_state)
        return (out, state) if return_state else out

    def zero_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        """The state before the first step."""
        device = device or self.A_log.device
        return MambaState(
            torch.zeros(batch_size, *self.conv_state_shape, device=device, dtype=dtype or self.in_proj.weight.dtype),
            torch.zeros(batch_size, *self.ssm_state_shape, device=device),
        )

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
    """Mamba (v1) selective-SSM mixer with the parameters of `mamba_ssm.Mamba`; `forward` as `MambaMixerBase`'s."""

    fused_kernel_name = "mamba_inner_fn"

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
        self.conv_state_shape, self.ssm_state_shape = (self.d_inner, d_conv), (self.d_inner, d_state)

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

    def _torch_forward(self, hidden_states, conv_state, ssm_state):
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        x, conv_state = causal_conv1d(x, self.conv1d.weight, self.conv1d.bias, conv_state)
        x = F.silu(x)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float())
        A = -torch.exp(self.A_log.float())
        x = x.float()
        y, ssm_state = selective_scan(x, dt, A, B.float(), C.float(), ssm_state)
        y = (y + x * self.D.float()) * F.silu(z.float())
        return self.out_proj(y.to(hidden_states.dtype)), MambaState(conv_state, ssm_state)

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
    """Mamba2 (SSD) mixer with the parameters of `mamba_ssm.Mamba2` (gated RMSNorm, gate applied before the norm);
    `forward` as `MambaMixerBase`'s. `chunk_size=None` picks the SSD chunk length by sequence length (measured on
    CPU) and 256 for the kernel.
    """

    fused_kernel_name = "mamba_split_conv1d_scan_combined"

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
        self.conv_state_shape, self.ssm_state_shape = (self.conv_dim, d_conv), (self.nheads, headdim, d_state)

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

    def _torch_forward(self, hidden_states, conv_state, ssm_state):
        batch, seq_len, _ = hidden_states.shape
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
        return self.out_proj(y.to(hidden_states.dtype)), MambaState(conv_state, ssm_state)

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
