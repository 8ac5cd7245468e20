"""Sampler steps for policy-gradient training (pure math): stochastic steps with log-probs
(:mod:`imgpref.sampling.sde`) and the deterministic steps around them (:mod:`imgpref.sampling.ode`)."""

from imgpref.sampling.ode import ddim_deterministic_step, euler_step
from imgpref.sampling.sde import cps_step, ddim_step, gaussian_kl_same_std, gaussian_log_prob, sde_step

__all__ = [
    "cps_step",
    "ddim_deterministic_step",
    "ddim_step",
    "euler_step",
    "gaussian_kl_same_std",
    "gaussian_log_prob",
    "sde_step",
]
