"""Tests of imagediff/vae.py: the posterior's mathematics, the autoencoder's shapes and wiring,
the measured latent scale (docs/pitfalls.md, pitfall 11), the loss, and the errors a user sees."""

import math

import pytest
import torch
import torch.nn.functional as F

from imagediff.vae import VAE, VAE_SIZES, DiagonalGaussian, VAEConfig, VAELoss, vae_config

# The smallest registered VAE (three resolutions, factor 4): what the lessons train.
TINY = vae_config("tiny")


def random_blobs(num_images: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """Images of three soft coloured Gaussian blobs on black, (N, 3, H, W) in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(-1, 1, height).view(1, 1, height, 1)
    xs = torch.linspace(-1, 1, width).view(1, 1, 1, width)
    images = torch.zeros(num_images, 3, height, width)
    for _ in range(3):
        centre = torch.rand(num_images, 2, 1, 1, 1, generator=generator) * 1.6 - 0.8  # (N, 2, 1, 1, 1)
        radius = torch.rand(num_images, 1, 1, 1, generator=generator) * 0.25 + 0.1  # (N, 1, 1, 1)
        colour = torch.rand(num_images, 3, 1, 1, generator=generator)  # (N, 3, 1, 1)
        squared_distance = (ys - centre[:, 0]) ** 2 + (xs - centre[:, 1]) ** 2  # (N, 1, H, W)
        images = images + colour * torch.exp(-squared_distance / (2 * radius**2))
    return images.clamp(0, 1) * 2 - 1


pytestmark = pytest.mark.usefixtures("one_thread")


def make_vae(config: VAEConfig = TINY, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(config)


# ---------------------------------------------------------------------------------------------
#                                       DiagonalGaussian
# ---------------------------------------------------------------------------------------------


def test_kl_matches_closed_form_of_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 4, 5, 6, generator=generator, dtype=torch.float64) * 2
    logvar = torch.randn(3, 4, 5, 6, generator=generator, dtype=torch.float64) * 3
    posterior = DiagonalGaussian(mean, logvar)
    # An independent implementation of the same closed form.
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0)
    )  # (3, 4, 5, 6)
    assert posterior.kl().shape == (3,)
    torch.testing.assert_close(posterior.kl(), reference.flatten(1).sum(1), rtol=1e-12, atol=1e-12)


def test_kl_matches_monte_carlo_estimate():
    # KL(q || p) = E_q[log q(z) - log p(z)], estimated with 200k samples per dimension.
    generator = torch.Generator().manual_seed(1)
    mean = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64).view(1, 3, 1, 1)
    logvar = torch.tensor([[-1.0, 0.5, 1.5]], dtype=torch.float64).view(1, 3, 1, 1)
    posterior = DiagonalGaussian(mean.expand(200_000, 3, 1, 1), logvar.expand(200_000, 3, 1, 1))
    z = posterior.sample(generator)  # (200000, 3, 1, 1)
    log_q = -0.5 * (math.log(2 * math.pi) + posterior.logvar + (z - posterior.mean) ** 2 / posterior.var)
    log_p = -0.5 * (math.log(2 * math.pi) + z**2)
    log_ratio = (log_q - log_p).flatten(1).sum(1)  # (200000,)
    estimate, standard_error = log_ratio.mean(), log_ratio.std() / math.sqrt(log_ratio.numel())
    exact = DiagonalGaussian(mean, logvar).kl()[0]
    assert abs(estimate - exact) < 4 * standard_error
    assert abs(estimate - exact) / exact < 0.01


def test_kl_is_zero_for_the_prior_itself():
    posterior = DiagonalGaussian(torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8))
    assert torch.equal(posterior.kl(), torch.zeros(2))


def test_logvar_is_clamped_so_std_and_kl_stay_finite():
    logvar = torch.tensor([-1000.0, -30.0, 0.0, 20.0, 1000.0]).view(1, 5, 1, 1)
    posterior = DiagonalGaussian(torch.zeros_like(logvar), logvar, logvar_min=-30.0, logvar_max=20.0)
    assert torch.equal(posterior.logvar.flatten(), torch.tensor([-30.0, -30.0, 0.0, 20.0, 20.0]))
    assert torch.all(posterior.std > 0) and torch.all(torch.isfinite(posterior.std))
    assert torch.isfinite(posterior.kl()).all()
    # The VAE passes its config's range to the posterior.
    vae = make_vae(VAEConfig(base_channels=16, logvar_min=-3.0, logvar_max=1.0))
    with torch.no_grad():
        vae.encoder.conv_out.bias[4:].fill_(-100.0)
    assert vae.encode(random_blobs(2)).logvar.min() == -3.0


def test_sample_is_reproducible_with_a_seeded_generator():
    posterior = DiagonalGaussian(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))
    first = posterior.sample(torch.Generator().manual_seed(7))
    again = posterior.sample(torch.Generator().manual_seed(7))
    other = posterior.sample(torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sample_has_the_posterior_mean_and_std():
    num_samples = 100_000
    mean = torch.tensor([1.5, -2.0, 0.0, 0.3]).view(1, 4, 1, 1)
    logvar = torch.tensor([0.0, 2.0, -4.0, 1.0]).view(1, 4, 1, 1)
    posterior = DiagonalGaussian(mean.expand(num_samples, 4, 1, 1), logvar.expand(num_samples, 4, 1, 1))
    z = posterior.sample(torch.Generator().manual_seed(0)).view(num_samples, 4)  # (N, 4)
    std = torch.exp(0.5 * logvar).view(4)
    # Standard errors: std / sqrt(N) for the mean, about std / sqrt(2N) for the standard deviation.
    assert torch.all((z.mean(0) - mean.view(4)).abs() < 5 * std / math.sqrt(num_samples))
    assert torch.all((z.std(0) - std).abs() < 5 * std / math.sqrt(2 * num_samples))


def test_mode_is_the_mean():
    mean, logvar = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.equal(DiagonalGaussian(mean, logvar).mode(), mean)


# ---------------------------------------------------------------------------------------------
#                                   Shapes and configuration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(32, 32), (32, 48), (16, 8)])
def test_shapes_of_latents_and_reconstructions(height, width):
    vae = make_vae()
    x = random_blobs(2, height, width)
    posterior = vae.encode(x)
    assert posterior.mean.shape == posterior.logvar.shape == (2, 4, height // 4, width // 4)
    x_hat, _ = vae(x, generator=torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape
    assert vae.encode_to_latents(x).shape == (2, 4, height // 4, width // 4)
    assert vae.decode_from_latents(vae.encode_to_latents(x)).shape == x.shape


def test_every_registered_size_maps_32x32_images_to_8x8x4_latents():
    x = random_blobs(1)
    for size in VAE_SIZES:
        vae = VAE(vae_config(size))
        with torch.no_grad():
            assert vae.encode(x).mean.shape == (1, 4, 8, 8), size
            assert vae.decode(torch.zeros(1, 4, 8, 8)).shape == (1, 3, 32, 32), size


def test_downsampling_factor_follows_the_number_of_resolutions():
    config = VAEConfig(base_channels=16, channel_multipliers=(1, 1, 2, 2))
    assert config.downsampling_factor == 8
    assert make_vae(config).encode(random_blobs(1)).mean.shape == (1, 4, 4, 4)
    assert VAEConfig(channel_multipliers=(1,)).downsampling_factor == 1


def test_config_round_trips_through_plain_types_and_rejects_bad_values():
    from dataclasses import asdict

    config = vae_config("tiny", latent_channels=8)
    assert config.latent_channels == 8 and config.base_channels == VAE_SIZES["tiny"].base_channels
    stored = asdict(config)
    stored["channel_multipliers"] = list(stored["channel_multipliers"])  # as a checkpoint stores it
    assert VAEConfig(**stored) == config
    with pytest.raises(ValueError, match="registered sizes are"):
        vae_config("huge")
    with pytest.raises(ValueError, match="norm_groups"):
        VAEConfig(base_channels=20, norm_groups=8)


def test_other_image_and_latent_channel_counts_work():
    # One-channel images (e.g. digits) and wider latents: nothing is hard-wired to 3 and 4.
    vae = make_vae(VAEConfig(image_channels=1, latent_channels=2, base_channels=16))
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    x_hat, posterior = vae(x)
    assert x_hat.shape == x.shape and posterior.mean.shape == (2, 2, 4, 4)


# ---------------------------------------------------------------------------------------------
#                                      Bad inputs speak up
# ---------------------------------------------------------------------------------------------


def test_encode_rejects_wrong_channels_and_sizes_with_the_expected_shape():
    vae = make_vae()
    message = "VAE.encode expected images of shape (B, 3, H, W) with H and W divisible by 4, got (2, 1, 32, 32)"
    with pytest.raises(ValueError) as error:
        vae.encode(torch.zeros(2, 1, 32, 32))
    assert message in str(error.value)
    with pytest.raises(ValueError, match=r"divisible by 4, got \(2, 3, 30, 32\)"):
        vae.encode(torch.zeros(2, 3, 30, 32))
    with pytest.raises(ValueError, match=r"got \(3, 32, 32\)"):
        vae.encode(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"fold time into the batch"):
        vae.encode(torch.zeros(2, 5, 3, 32, 32))
    with pytest.raises(ValueError, match="VAE.encode expected"):
        vae(torch.zeros(2, 1, 32, 32))


def test_decode_rejects_wrong_latent_channels():
    vae = make_vae()
    with pytest.raises(ValueError) as error:
        vae.decode(torch.zeros(2, 3, 8, 8))
    assert "VAE.decode expected latents of shape (B, 4, h, w), got (2, 3, 8, 8)" in str(error.value)
    with pytest.raises(ValueError, match="VAE.decode expected"):
        vae.decode_from_latents(torch.zeros(2, 8, 8))


# ---------------------------------------------------------------------------------------------
#                                The latent scale (pitfall 11)
# ---------------------------------------------------------------------------------------------


def test_measured_latent_scale_gives_unit_std_latents_and_is_saved_with_the_vae(tmp_path):
    vae = make_vae()
    images = random_blobs(20)
    assert vae.latent_scale.item() == 1.0  # nothing measured yet
    vae.train()
    # A batch size that does not divide 20 checks that the batches are combined correctly.
    scale = vae.measure_latent_scale(images, batch_size=7)
    assert vae.training  # the mode it was in is restored
    assert scale == pytest.approx(vae.latent_scale.item(), rel=1e-6)
    with torch.no_grad():
        unscaled = vae.encode(images).mode()
        latents = vae.encode_to_latents(images)
    assert scale == pytest.approx(1 / unscaled.double().std().item(), rel=1e-5)
    assert latents.std().item() == pytest.approx(1.0, abs=1e-4)
    # Latents are only scaled, never clipped.
    assert torch.equal(latents, unscaled * vae.latent_scale)
    # decode_from_latents undoes the scale.
    with torch.no_grad():
        torch.testing.assert_close(vae.decode_from_latents(latents), vae.decode(unscaled), rtol=1e-5, atol=1e-5)

    # The scale is part of the state dict, so it travels with the weights into a checkpoint.
    assert "latent_scale" in vae.state_dict()
    path = tmp_path / "vae.pt"
    torch.save(vae.state_dict(), path)
    fresh = make_vae(seed=1)
    assert fresh.latent_scale.item() == 1.0
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.latent_scale.item() == vae.latent_scale.item()
    with torch.no_grad():
        assert torch.equal(fresh.encode_to_latents(images), latents)


def test_measure_latent_scale_rejects_a_single_image():
    with pytest.raises(ValueError, match="at least 2 images"):
        make_vae().measure_latent_scale(random_blobs(1))


# ---------------------------------------------------------------------------------------------
#                                    The loss and training
# ---------------------------------------------------------------------------------------------


def test_loss_is_reconstruction_plus_weighted_kl_per_pixel_value():
    vae = make_vae()
    images, labels = random_blobs(4), torch.arange(4)
    loss, logs = VAELoss(kl_weight=1e-2)(vae, (images, labels), torch.Generator().manual_seed(3))
    # The same computation by hand, with the same noise.
    x_hat, posterior = vae(images, generator=torch.Generator().manual_seed(3))
    reconstruction = ((x_hat - images) ** 2).mean()
    kl = posterior.kl().sum() / (4 * 3 * 32 * 32)
    torch.testing.assert_close(loss, reconstruction + 1e-2 * kl)
    assert logs["reconstruction"] == pytest.approx(reconstruction.item(), rel=1e-5)
    assert logs["kl"] == pytest.approx(kl.item(), rel=1e-5)
    assert logs["loss"] == pytest.approx(loss.item(), rel=1e-5)
    # kl_weight = 0 is a plain (noisy) autoencoder.
    loss_without_kl, logs = VAELoss(kl_weight=0.0)(vae, (images,), torch.Generator().manual_seed(3))
    assert loss_without_kl.item() == pytest.approx(logs["reconstruction"], rel=1e-6)
    with pytest.raises(ValueError, match="kl_weight"):
        VAELoss(kl_weight=-1.0)


def test_gradients_reach_every_parameter():
    vae = make_vae()
    loss, _ = VAELoss()(vae, (random_blobs(4),), torch.Generator().manual_seed(0))
    loss.backward()
    for name, parameter in vae.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_overfitting_a_few_images_drops_the_reconstruction_error():
    # 100 Adam steps on 16 fixed 16x16 images (small, to keep this under ~10 s on one thread): if
    # encoder, decoder or loss were miswired, the reconstruction error could not fall by a factor
    # of 20. (It falls from about 0.9 to about 0.013.)
    vae = make_vae()
    images = random_blobs(16, 16, 16, seed=1)
    loss_function = VAELoss()
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)

    def reconstruction_error() -> float:
        with torch.no_grad():
            x_hat, _ = vae(images, sample_posterior=False)
        return F.mse_loss(x_hat, images).item()

    error_before = reconstruction_error()
    for _ in range(100):
        loss, _ = loss_function(vae, (images,), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    error_after = reconstruction_error()
    assert error_after < error_before / 20, (error_before, error_after)


def test_the_vae_trains_through_toydiffs_shared_loop_unchanged(tmp_path):
    # Layers reuse, never copy: the VAE loss is an objective for toydiff.training.train, checkpoints
    # and EMA included.
    from imagediff.data import make_dataset
    from toydiff.checkpoints import load_checkpoint
    from toydiff.training import TensorBatches, TrainConfig, train

    data = make_dataset("shapes", 256, seed=0)
    held_out = make_dataset("shapes", 64, seed=1).images
    torch.manual_seed(0)
    vae = VAE(vae_config("tiny"))
    with torch.no_grad():
        before = F.mse_loss(vae.decode(vae.encode(held_out).mode()), held_out).item()
    config = TrainConfig(steps=60, batch_size=32, learning_rate=2e-3, warmup_steps=5, log_every=20,
                         ema_decay=0.9, progress=False)
    result = train(vae, VAELoss(), TensorBatches(data.images), config, checkpoint_path=tmp_path / "vae.pt",
                   run_config={"vae": "tiny"}, checkpoint_kind="imagediff.vae")
    with torch.no_grad():
        after = F.mse_loss(result.model.decode(result.model.encode(held_out).mode()), held_out).item()
    assert after < 0.5 * before
    assert load_checkpoint(tmp_path / "vae.pt", kind="imagediff.vae")["step"] == 60


def test_latent_scale_of_is_one_over_the_unbiased_float64_std_of_every_value_and_is_what_the_vae_measures():
    from imagediff.vae import latent_scale_of

    # A known value: 1, 2, 3, 4 have mean 2.5 and unbiased variance 5/3, so the scale is √(3/5). One
    # scalar over all values: 1/std per column would be 1/√2, the biased 1/std 1/√(5/4), the std √(5/3).
    assert latent_scale_of(torch.tensor([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(math.sqrt(3 / 5), rel=1e-12)
    # In float64 whatever comes in: float32 latents far from 0 lose digits in a float32 std.
    latents = 3.0 + 0.7 * torch.randn(256, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # float32
    assert latent_scale_of(latents) == pytest.approx(1 / latents.double().std().item(), rel=1e-12)
    # VAE.measure_latent_scale is this function of the posterior modes, encoded in batches of 4 or all
    # at once (float32 convolutions of other batch sizes round differently: 1e-6, where a biased or
    # per-channel std would be off by 1e-4 or more).
    vae = make_vae()
    images = random_blobs(9)
    with torch.no_grad():
        modes = vae.encode(images).mode()  # (9, 4, 8, 8)
    assert vae.measure_latent_scale(images) == latent_scale_of(modes)
    assert vae.measure_latent_scale(images, batch_size=4) == pytest.approx(latent_scale_of(modes), rel=1e-6)
    # Errors that say what was wrong.
    with pytest.raises(ValueError, match=r"every latent value is 0.1 \(zero variance\).*Are all the images identical"):
        latent_scale_of(torch.full((4, 4, 2, 2), 0.1))
    with pytest.raises(ValueError, match=r"at least 2 latents \(N, \.\.\.\), got shape \(1, 4, 2, 2\)"):
        latent_scale_of(torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        latent_scale_of(torch.tensor([1.0, float("nan"), 2.0]))
