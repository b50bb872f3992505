"""Latent diffusion on images: procedural data, a convolutional VAE and a DiT denoiser, built on toydiff."""
