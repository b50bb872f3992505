"""The variational autoencoder of latent diffusion (Rombach et al. 2022, "AutoencoderKL").

Latent diffusion does not denoise pixels. A convolutional encoder first compresses an image
x of shape (B, 3, H, W) into a latent z of shape (B, 4, H/4, W/4); the diffusion model learns the
distribution of z; a decoder maps a sampled z back to pixels. This file is that autoencoder and
nothing else: the diffusion model never sees pixels and the VAE never sees noise levels.

Why a *variational* autoencoder rather than a plain one? The encoder outputs a Gaussian
q(z | x) = N(mean(x), diag(exp(logvar(x)))) and training adds a small KL penalty towards N(0, I)
(Kingma & Welling 2014). The penalty keeps the latent space smooth and of bounded scale, so that a
slightly wrong latent produced by the diffusion sampler still decodes to a plausible image. The KL
weight is tiny: this is a compressor with a regulariser, not a generative model in its own right.

Notation
    x        images in [-1, 1], (B, C, H, W)
    z        latents, (B, latent_channels, H/f, W/f) with f = the downsampling factor (4 here)
    f        2 ** (number of resolutions - 1)
    z * latent_scale   the "scaled latents" that diffusion is trained on; latent_scale is measured
                       from data so that they have unit standard deviation (see measure_latent_scale)

The video layer applies this same VAE to every frame: fold time into the batch, (B*T, C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
#                                         Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class VAEConfig:
    """Every choice that shapes the autoencoder, in plain types (it is saved in checkpoints)."""

    image_channels: int = 3
    latent_channels: int = 4
    # The defaults are the registered size "tiny" (VAE_SIZES below), the one the pipeline trains.
    base_channels: int = 8
    # One entry per resolution, highest first; resolution i has base_channels * multiplier[i]
    # channels. Between consecutive resolutions the image is halved, so (1, 2, 4) means two
    # downsamplings: 32x32 -> 16x16 -> 8x8, a downsampling factor of 4.
    channel_multipliers: tuple[int, ...] = (1, 2, 4)
    residual_blocks_per_resolution: int = 1
    norm_groups: int = 8
    # Weight of the KL term, with both loss terms measured per pixel value (see VAELoss). Not used
    # by the VAE itself: the training objective reads it, VAELoss(config.kl_weight).
    # Why 1e-4 and not Stable Diffusion's 1e-6: their reconstruction term is L1 + a perceptual loss,
    # of order 0.05 per pixel for a good model; ours is the MSE, of order 1e-3 to 1e-2 per pixel on
    # the 32x32 toy images, tens of times smaller, so the same balance needs a larger weight. It is
    # still gentle: training "tiny" on the shapes data for 300 steps, 1e-4 and 1e-6 reached the
    # same reconstruction error (0.011), with the KL term 0.3% of the loss. What it buys is a
    # latent space with a bounded scale and a posterior noise the decoder must tolerate.
    kl_weight: float = 1e-4
    # log-variance is clamped to this range before exp(), as in the LDM code: exp(20) and exp(-30)
    # are still finite in float32, so neither std nor the KL can overflow to inf or underflow to 0.
    logvar_min: float = -30.0
    logvar_max: float = 20.0

    def __post_init__(self) -> None:
        # A checkpoint stores the tuple as a list; make the config equal to the one that saved it.
        self.channel_multipliers = tuple(int(m) for m in self.channel_multipliers)
        if len(self.channel_multipliers) < 1:
            raise ValueError("VAEConfig.channel_multipliers needs at least one resolution, got ().")
        for multiplier in self.channel_multipliers:
            channels = self.base_channels * multiplier
            if channels % self.norm_groups != 0:
                raise ValueError(
                    f"VAEConfig: GroupNorm needs channels divisible by norm_groups={self.norm_groups}, "
                    f"but base_channels * multiplier = {self.base_channels} * {multiplier} = {channels}. "
                    "Choose norm_groups that divides every channel count."
                )
        if not self.logvar_min < self.logvar_max:
            raise ValueError(
                f"VAEConfig: logvar_min ({self.logvar_min}) must be below logvar_max ({self.logvar_max})."
            )

    @property
    def downsampling_factor(self) -> int:
        """How many pixels one latent position covers along each side (4 for three resolutions)."""
        return 2 ** (len(self.channel_multipliers) - 1)


# Named sizes, as in DiT's registry. All three compress 32x32x3 images to 8x8x4 latents (a factor
# of 12 in numbers); they differ only in width and depth, i.e. in reconstruction quality and speed.
# Channels grow (1, 2, 4) towards the latent, where positions are 16 times fewer. On 2 CPU cores the
# cost is in the full-resolution convolutions: at batch 64 one step of base_channels 16 took 0.44 s,
# of base_channels 8 0.19 s, and 8-32-64 channels (more width at low resolution) was slower still.
VAE_SIZES: dict[str, VAEConfig] = {
    # The default, the fastest: its training time and PSNR are measured by `make bench` (README).
    "tiny": VAEConfig(base_channels=8, channel_multipliers=(1, 2, 4), residual_blocks_per_resolution=1),
    # Sharper reconstructions for a longer CPU run or a GPU.
    "small": VAEConfig(base_channels=16, channel_multipliers=(1, 2, 4), residual_blocks_per_resolution=1),
    # The layout of the LDM f=4 autoencoder scaled down: two blocks per resolution, 32 groups.
    "base": VAEConfig(
        base_channels=64, channel_multipliers=(1, 2, 4), residual_blocks_per_resolution=2, norm_groups=32
    ),
}


def vae_config(size: str = "tiny", **overrides) -> VAEConfig:
    """The VAEConfig registered under `size`, with any field replaced by `overrides`."""
    if size not in VAE_SIZES:
        raise ValueError(f"Unknown VAE size {size!r}; the registered sizes are {sorted(VAE_SIZES)}.")
    return replace(VAE_SIZES[size], **overrides)


# ---------------------------------------------------------------------------------------------
#                                The posterior q(z | x)
# ---------------------------------------------------------------------------------------------


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))), the encoder's posterior over latents.

    mean, logvar: (B, C, h, w). logvar is clamped to [logvar_min, logvar_max] on construction so
    that std = exp(logvar / 2) stays finite and positive whatever the encoder outputs.
    """

    def __init__(
        self, mean: torch.Tensor, logvar: torch.Tensor, logvar_min: float = -30.0, logvar_max: float = 20.0
    ) -> None:
        if mean.shape != logvar.shape:
            raise ValueError(
                f"DiagonalGaussian needs mean and logvar of the same shape, got {tuple(mean.shape)} "
                f"and {tuple(logvar.shape)}."
            )
        self.mean = mean
        self.logvar = logvar.clamp(logvar_min, logvar_max)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std * eps with eps ~ N(0, I): the reparameterisation trick, so gradients
        reach mean and logvar. Returns (B, C, h, w)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The most likely latent, which for a Gaussian is its mean. Returns (B, C, h, w)."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q(z | x) || N(0, I)) in nats, summed over latent dimensions. Returns (B,).

        For one dimension, KL(N(mu, s^2) || N(0, 1)) = 1/2 (mu^2 + s^2 - 1 - log s^2)
        (Kingma & Welling 2014, appendix B).
        """
        per_dimension = 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar)  # (B, C, h, w)
        return per_dimension.flatten(start_dim=1).sum(dim=1)  # (B,)


# ---------------------------------------------------------------------------------------------
#                                       Building blocks
# ---------------------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """x + F(x) with F = (GroupNorm -> SiLU -> Conv3x3) twice; a 1x1 conv on the skip path when
    the number of channels changes (the residual block of the DDPM / LDM U-Nets)."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(norm_groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.skip = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, C_out, H, W)
        return self.skip(x) + h  # (B, C_out, H, W)


class Downsample(nn.Module):
    """Halve H and W with a learned stride-2 3x3 conv (H -> H/2 for even H)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour repeat, then a 3x3 conv. Unlike a transposed conv this
    cannot produce checkerboard artefacts (Odena et al. 2016, "Deconvolution and checkerboard")."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
        return self.conv(x)  # (B, C, 2H, 2W)


# ---------------------------------------------------------------------------------------------
#                                     Encoder and decoder
# ---------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """Images (B, image_channels, H, W) -> posterior parameters (B, 2 * latent_channels, H/f, W/f)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_multipliers]
        groups = config.norm_groups
        self.stem = nn.Conv2d(config.image_channels, widths[0], kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        channels = widths[0]
        for level, width in enumerate(widths):
            stage = nn.ModuleList()
            for _ in range(config.residual_blocks_per_resolution):
                stage.append(ResidualBlock(channels, width, groups))
                channels = width
            if level < len(widths) - 1:  # no downsampling after the lowest resolution
                stage.append(Downsample(channels))
            self.down.append(stage)
        self.middle = nn.Sequential(ResidualBlock(channels, channels, groups), ResidualBlock(channels, channels, groups))
        self.norm_out = nn.GroupNorm(groups, channels)
        # Twice latent_channels: the first half is the mean, the second the log-variance.
        # PyTorch's default init starts the log-variance near 0, a posterior as wide as the prior.
        # Starting it at -6 instead (std 0.05, so the decoder first sees the means) was tried and
        # made no measurable difference to how fast reconstruction improves: Adam shrinks the
        # variance within the first few dozen steps. So the default stays.
        self.conv_out = nn.Conv2d(channels, 2 * config.latent_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # (B, C_0, H, W)
        for stage in self.down:
            for layer in stage:
                h = layer(h)  # (B, C_i, H_i, W_i), halved at the end of every stage but the last
        h = self.middle(h)  # (B, C_last, H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 2 * latent_channels, H/f, W/f)


class Decoder(nn.Module):
    """Latents (B, latent_channels, h, w) -> images (B, image_channels, h*f, w*f). Mirrors Encoder."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_multipliers]
        groups = config.norm_groups
        channels = widths[-1]
        self.stem = nn.Conv2d(config.latent_channels, channels, kernel_size=3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(channels, channels, groups), ResidualBlock(channels, channels, groups))
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            stage = nn.ModuleList()
            # One block more than the encoder, as in LDM: decoding is the harder direction.
            for _ in range(config.residual_blocks_per_resolution + 1):
                stage.append(ResidualBlock(channels, widths[level], groups))
                channels = widths[level]
            if level > 0:  # no upsampling after the highest resolution
                stage.append(Upsample(channels))
            self.up.append(stage)
        self.norm_out = nn.GroupNorm(groups, channels)
        # No tanh at the end: it would saturate and starve gradients for pixels near +-1, which
        # the procedural images (flat black backgrounds, saturated shapes) are full of. The MSE
        # keeps outputs in range; callers clamp to [-1, 1] only for display.
        self.conv_out = nn.Conv2d(channels, config.image_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.stem(z)  # (B, C_last, h, w)
        h = self.middle(h)  # (B, C_last, h, w)
        for stage in self.up:
            for layer in stage:
                h = layer(h)  # (B, C_i, H_i, W_i), doubled at the end of every stage but the last
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, image_channels, h*f, w*f)


# ---------------------------------------------------------------------------------------------
#                                     The latent scale factor
# ---------------------------------------------------------------------------------------------


def latent_scale_of(latents: torch.Tensor) -> float:
    """1 / std of a batch of latents: the factor that gives them unit standard deviation.

    latents: (N, ...) with N >= 2, e.g. posterior modes (N, latent_channels, h, w). Returns a
    Python float. One scalar over every value of every latent, about their common mean (as in
    Stable Diffusion, not one per channel), unbiased (divides by n - 1, like torch.std), and
    computed in float64, whatever the latents' dtype. VAE.measure_latent_scale encodes images and
    calls this; see it for why diffusion wants latents of unit std.
    """
    if latents.ndim < 1 or latents.shape[0] < 2:
        raise ValueError(
            f"latent_scale_of expected a batch of at least 2 latents (N, ...), got shape {tuple(latents.shape)}."
        )
    latents = latents.detach().double()  # (N, ...)
    if not torch.isfinite(latents).all():
        raise ValueError("latent_scale_of: the latents contain NaN or inf; did the VAE's training diverge?")
    if latents.max() == latents.min():  # exact, where a rounded std of a constant may be 1e-17, not 0
        raise ValueError(
            f"latent_scale_of: every latent value is {latents.flatten()[0].item():.6g} (zero variance), so no "
            "scale can make their std 1. Are all the images identical?"
        )
    return 1.0 / latents.std().item()  # std over all values, unbiased


# ---------------------------------------------------------------------------------------------
#                                       The autoencoder
# ---------------------------------------------------------------------------------------------


class VAE(nn.Module):
    """The KL-regularised autoencoder of latent diffusion ("AutoencoderKL" in the LDM code).

    Diffusion uses two calls only: `encode_to_latents` (images -> scaled latents, for training)
    and `decode_from_latents` (scaled latents -> images, after sampling).
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        # Multiplies latents before diffusion sees them (docs/pitfalls.md, pitfall 11): measured from
        # data by measure_latent_scale, never a magic constant like Stable Diffusion's 0.18215,
        # which belongs to their VAE and their data. A persistent buffer, so it is saved in
        # state_dict and therefore in every checkpoint together with the weights it was measured for.
        self.register_buffer("latent_scale", torch.tensor(1.0), persistent=True)

    # -- checks that speak to the user --------------------------------------------------------

    def _check_images(self, x: torch.Tensor) -> None:
        f = self.config.downsampling_factor
        channels = self.config.image_channels
        if x.ndim != 4 or x.shape[1] != channels or x.shape[2] % f != 0 or x.shape[3] % f != 0:
            hint = " For videos, fold time into the batch first: (B*T, C, H, W)." if x.ndim == 5 else ""
            raise ValueError(
                f"VAE.encode expected images of shape (B, {channels}, H, W) with H and W divisible by {f}, "
                f"got {tuple(x.shape)}.{hint}"
            )

    def _check_latents(self, z: torch.Tensor) -> None:
        channels = self.config.latent_channels
        if z.ndim != 4 or z.shape[1] != channels:
            hint = " For videos, fold time into the batch first: (B*T, C, h, w)." if z.ndim == 5 else ""
            raise ValueError(
                f"VAE.decode expected latents of shape (B, {channels}, h, w), got {tuple(z.shape)}.{hint}"
            )

    # -- the autoencoder ----------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images x in [-1, 1], (B, C, H, W) -> posterior q(z | x) over (B, latent_channels, H/f, W/f)."""
        self._check_images(x)
        moments = self.encoder(x)  # (B, 2 * latent_channels, H/f, W/f)
        mean, logvar = moments.chunk(2, dim=1)  # each (B, latent_channels, H/f, W/f)
        return DiagonalGaussian(mean, logvar, self.config.logvar_min, self.config.logvar_max)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents z, (B, latent_channels, h, w) -> images, (B, C, h*f, w*f), not clamped."""
        self._check_latents(z)
        return self.decoder(z)  # (B, C, h*f, w*f)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, sample_posterior: bool = True
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruct x, (B, C, H, W) -> (x_hat (B, C, H, W), posterior).

        Training decodes a sample of the posterior (so the decoder learns to tolerate the
        posterior's spread); pass sample_posterior=False to decode its mean, for evaluation.
        """
        posterior = self.encode(x)  # over (B, latent_channels, H/f, W/f)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()  # (B, latent_channels, H/f, W/f)
        x_hat = self.decode(z)  # (B, C, H, W)
        return x_hat, posterior

    # -- the interface to diffusion -----------------------------------------------------------

    def encode_to_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (B, C, H, W) -> scaled latents mode(q(z | x)) * latent_scale,
        (B, latent_channels, H/f, W/f): what the diffusion model is trained on.

        Uses the posterior mode, as measure_latent_scale does, so the scale measured is the scale
        diffusion sees. Gradients are not disabled here; wrap the call in torch.no_grad() when the
        VAE is frozen. Latents are never clipped (docs/pitfalls.md, pitfall 11): their range is whatever
        the data gives.
        """
        return self.encode(x).mode() * self.latent_scale  # (B, latent_channels, H/f, W/f)

    def decode_from_latents(self, z_scaled: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, latent_channels, h, w), e.g. from a diffusion sampler -> images
        (B, C, h*f, w*f). Undoes the scaling of encode_to_latents, then decodes."""
        return self.decode(z_scaled / self.latent_scale)  # (B, C, h*f, w*f)

    @torch.no_grad()
    def measure_latent_scale(self, images: torch.Tensor, batch_size: int = 256) -> float:
        """Set latent_scale = 1 / std(latents of `images`) and return it.

        images: (N, C, H, W) in [-1, 1], ideally the diffusion training set (or a few thousand of it).

        Why: diffusion adds noise of unit variance and its schedules assume the data has roughly unit
        variance too. A VAE's latents have whatever spread its training gave them; if it is 5, the
        first noise levels hardly touch the signal, if it is 0.2, the signal drowns early. Rescaling
        to std 1 makes the schedule mean what it says (Rombach et al. 2022, appendix G).

        The latents measured are posterior modes, not samples: encode_to_latents uses the mode too,
        so diffusion trains on deterministic latents (the same image always gives the same target,
        and a data set can be encoded once and cached), and the scale is measured on exactly that.
        After training the posterior std is small next to the spread of the means (about 0.02
        against 1.2 for "tiny" on the shapes data), so a sample would give almost the same number;
        the LDM code measures on samples, which matters only while the posterior is still wide.

        The std is latent_scale_of's: over every latent value of every image, about their common
        mean (one scalar, as in Stable Diffusion), unbiased, computed in float64. The images are
        encoded batch by batch (the encoder's activations are what is large); their latents, with
        latent_channels / (C f²) as many values as the images, are kept to take the std in one place.
        """
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(
                f"VAE.measure_latent_scale expected a batch of at least 2 images (N, C, H, W), "
                f"got shape {tuple(images.shape)}."
            )
        was_training = self.training
        self.eval()  # nothing here behaves differently in training mode today; dropout would
        device = self.latent_scale.device
        latents = []
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device=device, dtype=self.encoder.stem.weight.dtype)
            latents.append(self.encode(batch).mode().double())  # (b, latent_channels, H/f, W/f)
        self.train(was_training)
        scale = latent_scale_of(torch.cat(latents))  # of (N, latent_channels, H/f, W/f)
        self.latent_scale.fill_(scale)
        return scale


# ---------------------------------------------------------------------------------------------
#                                         The loss
# ---------------------------------------------------------------------------------------------


class VAELoss:
    """The training objective of the VAE, as a callable the generic training loop can use:
    loss, logs = VAELoss(kl_weight)(model, batch, generator).

        loss = MSE(x_hat, x) + kl_weight * KL(q(z | x) || N(0, I)) / (C * H * W)

    Both terms are per pixel value: the MSE is the mean over (B, C, H, W) and the KL, summed over
    latent dimensions, is averaged over the batch and divided by the number of pixel values of one
    image. So kl_weight is "nats of KL worth one unit of squared error per pixel value" and does
    not change with image size, and it is the same ratio as in the LDM code, which sums both terms.

    Reconstruction is plain MSE, i.e. a Gaussian decoder likelihood: one term, one idea. LDM adds
    L1, a perceptual loss and a GAN to get crisp textures on photographs; on flat-coloured
    procedural shapes MSE alone reconstructs well, and none of the others is needed to show how
    latent diffusion works.
    """

    def __init__(self, kl_weight: float = VAEConfig.kl_weight) -> None:
        if kl_weight < 0:
            raise ValueError(f"VAELoss: kl_weight must be >= 0, got {kl_weight}.")
        self.kl_weight = kl_weight

    def __call__(
        self, model: nn.Module, batch: tuple, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """model: a VAE (or a DistributedDataParallel wrapping one: we call it, not its methods).
        batch: a tuple whose first element is images in [-1, 1], (B, C, H, W); the rest is ignored.
        Returns the scalar loss and {"reconstruction", "kl", "loss"} as floats for logging."""
        images = batch[0]  # (B, C, H, W)
        x_hat, posterior = model(images, generator=generator)  # (B, C, H, W), over (B, c, h, w)
        reconstruction = F.mse_loss(x_hat, images)  # scalar, mean over B, C, H, W
        pixel_values_per_image = images[0].numel()  # C * H * W
        kl = posterior.kl().mean() / pixel_values_per_image  # scalar, nats per pixel value
        loss = reconstruction + self.kl_weight * kl
        logs = {"loss": loss.item(), "reconstruction": reconstruction.item(), "kl": kl.item()}
        return loss, logs
