"""Diffusion: noise schedules, respacing, DDPM losses and samplers, DiSA step schedules.

Shared by the diffusion head (`visgen.generators.diffusion_head`, MAR) and
later by flow decoders. Numpy on the host for schedules (`schedule`, `disa`),
jax for the loss (`ddpm`) and the jitted sampler (`sampler`).
"""

from visgen.diffusion.ddpm import (
    discretized_gaussian_log_likelihood,
    gaussian_baseline_mse,
    normal_kl,
    p_mean_variance,
    q_posterior,
    q_sample,
    training_loss_terms,
    training_losses,
)
from visgen.diffusion.disa import DISA_CLIP, STRATEGIES, DisaSchedule, effective_steps
from visgen.diffusion.sampler import SpacedTables, p_sample_loop, spaced_tables
from visgen.diffusion.schedule import (
    NUM_TIMESTEPS,
    Schedule,
    cosine_betas,
    cosine_schedule,
    space_timesteps,
)

__all__ = [
    "DISA_CLIP",
    "NUM_TIMESTEPS",
    "STRATEGIES",
    "DisaSchedule",
    "Schedule",
    "SpacedTables",
    "cosine_betas",
    "cosine_schedule",
    "discretized_gaussian_log_likelihood",
    "effective_steps",
    "gaussian_baseline_mse",
    "normal_kl",
    "p_mean_variance",
    "p_sample_loop",
    "q_posterior",
    "q_sample",
    "space_timesteps",
    "spaced_tables",
    "training_loss_terms",
    "training_losses",
]
