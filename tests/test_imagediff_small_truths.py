"""Defaults that are what they claim, and bad labels stopped at the DiT's door.

- ``VAEConfig()`` is a registered size: the one the pipeline trains by default.
- A label the DiT's table has no row for is a ValueError naming the range, not an IndexError
  from inside the embedding.
- The noisy classifier holds a DiT trunk: the same layers, under ``trunk.``, as the DiT's own.
"""
import re
from dataclasses import replace

import pytest
import torch

from imagediff.classifier import NoisyLatentClassifier
from imagediff.dit import DiT, DiTConfig
from imagediff.pipeline import VAERunConfig
from imagediff.vae import VAEConfig, vae_config

SMALL = DiTConfig(input_size=(4, 4), in_channels=4, patch_size=2, hidden_dim=32, depth=2, num_heads=2)


def test_vae_config_defaults_are_the_registered_size_the_pipeline_trains():
    assert VAEConfig() == vae_config("tiny")
    assert VAERunConfig().vae == VAEConfig()  # the default run trains exactly the default VAE


@pytest.mark.parametrize("bad", [[0, 4], [-1, 0], [7, 9]])
def test_dit_refuses_a_label_outside_its_table_with_the_range(bad):
    model = DiT(replace(SMALL, num_classes=3))
    x_t, t = torch.randn(2, 4, 4, 4), torch.tensor([10, 500])
    assert model(x_t, t, torch.tensor([0, 3])).shape == (2, 4, 4, 4)  # 3 is the null label: allowed
    wrong = sorted(label for label in bad if not 0 <= label <= 3)
    with pytest.raises(ValueError, match=re.escape(f"labels must lie in 0..3 (classes 0..2, 3 = null), got {wrong}")):
        model(x_t, t, torch.tensor(bad))


def test_the_noisy_classifier_holds_the_dits_trunk():
    torch.manual_seed(0)
    dit = DiT(SMALL)  # num_classes = 0: conditioned on t only, as the classifier is
    for block in dit.blocks:  # leave adaLN-Zero's identity, so the blocks matter
        torch.nn.init.normal_(block.adaln_modulation[-1].weight, std=0.1)
    classifier = NoisyLatentClassifier(SMALL, num_labels=3)
    trunk = {name: value for name, value in dit.state_dict().items() if not name.startswith("final_layer.")}
    classifier.trunk.load_state_dict(trunk)  # strict: the same layers, nothing missing, nothing extra
    assert set(classifier.state_dict()) == {f"trunk.{name}" for name in trunk} | {
        "head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias"}
    x_t, t = torch.randn(3, 4, 4, 4), torch.tensor([0, 400, 999])
    tokens, _ = dit.trunk(x_t, t)  # (3, N, D)
    expected = classifier.head(tokens.mean(dim=1))  # pooled tokens -> logits (3, 3)
    torch.testing.assert_close(classifier(x_t, t), expected, rtol=0, atol=0)
    # Every parameter takes part in the logits (none left over, which DDP would refuse).
    classifier(x_t, t).sum().backward()
    assert all(parameter.grad is not None for parameter in classifier.parameters())
