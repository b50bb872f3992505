"""Exercise 05 — the posterior of the VAE, and the latent scale factor (imagediff.vae).

Latent diffusion (Rombach et al. 2022) does not denoise pixels: it denoises the latents z of an
autoencoder.  The encoder of that autoencoder does not give one latent per image but a Gaussian
posterior, diagonal, written as a mean μ and a log-variance log σ², both of shape (B, C, h, w):

    q(z | x) = N(μ(x), diag(σ²(x)))

Three small formulas make it work.

1. The reparameterisation trick (Kingma & Welling 2014, section 2.4).  A value drawn from N(μ, σ²)
   by a random number generator has no gradient with respect to μ and σ.  Draw the randomness
   first, from a distribution that does not depend on them, and make the sample a plain function
   of the parameters:

       z = μ + σ · ε,      σ = exp(½ log σ²),      ε ~ N(0, I)

   Now the loss reaches the encoder through μ and σ.  Before the exponential the log-variance is
   clamped to [logvar_min, logvar_max] (−30 and 20, as in the LDM code): exp(10) and exp(−15) are
   finite in float32, so σ can neither overflow to inf nor underflow to 0 whatever the encoder
   outputs.  With ε = 0 the "sample" is μ, the posterior's mode.

2. The KL penalty towards the prior N(0, I) (Kingma & Welling 2014, appendix B).  For one latent
   dimension,

       KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − 1 − log σ²)

   summed over every latent dimension of one image (all C · h · w of them): one number per image,
   in nats, never negative, and exactly 0 for μ = 0, σ = 1 (the prior itself).  The same clamped
   log-variance is used here.

3. The latent scale factor (Rombach et al. 2022, appendix G).  Diffusion adds noise of unit
   variance and its schedules assume data of roughly unit variance; latents have whatever spread
   the VAE's training gave them.  So they are multiplied by

       latent_scale = 1 / std(z)

   measured once on the data: ONE scalar over every value of every latent (all images, channels
   and positions together), the unbiased std (divide by n − 1, as torch.std does), in float64 (a
   data set has millions of latent values; float32 loses digits).  It is measured, never a
   constant copied from another model (docs/pitfalls.md, pitfall 11).

Your task: write the three functions below.  Every ``todo(...)`` is an expression to replace; the
comment above it says which formula it is.

Check your work (from the repository root):

    cp lessons/exercises/ex05_vae.py lessons/exercises/ex05_work.py      # edit the copy
    python -m lessons.exercises.check 05 lessons/exercises/ex05_work.py

The checker compares your functions with ``imagediff.vae.DiagonalGaussian`` (``sample`` with a
seeded generator, ``mode``, ``kl``) and with ``imagediff.vae.latent_scale_of`` (what
``VAE.measure_latent_scale`` computes its scale with), on random inputs, on log-variances far outside
the clamp range, and on the prior itself.  Reference answer:
``solutions/ex05_vae.py`` — try first.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def reparameterised_sample(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor,
                           logvar_min: float = -30.0, logvar_max: float = 20.0) -> torch.Tensor:
    """z = μ + σ ε, with σ = exp(½ clamp(log σ², logvar_min, logvar_max)).

    mean, logvar, noise: (B, C, h, w), the posterior's μ and log σ², and ε ~ N(0, I).
    Returns z, (B, C, h, w), differentiable with respect to mean and logvar.
    """
    # 1. σ = exp(½ log σ²), with log σ² first clamped to [logvar_min, logvar_max] (torch.clamp).
    std = todo("σ from the clamped log-variance")
    # 2. The reparameterisation trick: z = μ + σ ε.
    return todo("the sample z")


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor,
                          logvar_min: float = -30.0, logvar_max: float = 20.0) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) in nats, summed over every dimension but the batch.

    mean, logvar: (B, ...) the posterior's μ and log σ² (any number of non-batch dimensions).
    Returns (B,): one value per example.
    """
    # 1. The clamped log-variance, and σ² = exp(log σ²).
    logvar = todo("log σ² clamped to [logvar_min, logvar_max]")
    var = todo("σ²")
    # 2. ½ (μ² + σ² − 1 − log σ²) for every latent dimension, (B, ...).
    per_dimension = todo("the KL of each dimension")
    # 3. Sum over everything but the batch (hint: flatten(start_dim=1), then sum over dim 1).
    return todo("one KL per example, (B,)")


def latent_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of all the values of a batch of latents: the factor that gives them unit std.

    latents: (N, C, h, w) in any float dtype.  Returns a Python float (hint: .item()).
    """
    # 1. Every value counts alike: one std over the whole tensor, unbiased (n − 1), in float64.
    std = todo("the unbiased std of all values, in float64")
    # 2. The scale that makes that std 1.
    return todo("1 / std, as a Python float")
