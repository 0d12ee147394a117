"""Minimal reproduction: Opacus 1.6.0's make_private derives the sample rate and the gradient
normaliser from the dataset's size, so under add/remove adjacency D and D' (one example more)
run different mechanisms.

    .venv/bin/python adapters/opacus/repro_sample_rate.py

For 200 and 201 examples with batch_size 50 it prints the sample rate the accountant uses
(1 / len(data_loader) = 1 / ceil(n / 50)), the divisor of the noisy sum for loss_reduction="mean"
(expected_batch_size = int(n * sample_rate)), and the noise standard deviation that reaches the
parameters' gradient (noise_multiplier * max_grad_norm / expected_batch_size).
"""

import warnings

import torch
from opacus import PrivacyEngine
from torch import nn

warnings.filterwarnings("ignore")
for n in (200, 201):
    data = torch.utils.data.TensorDataset(torch.zeros(n, 4), torch.zeros(n, dtype=torch.long))
    model = nn.Linear(4, 2)
    engine = PrivacyEngine(accountant="rdp")
    _, optimizer, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=torch.utils.data.DataLoader(data, batch_size=50), noise_multiplier=1.0, max_grad_norm=1.0,
    )
    print(f"|D| = {n}: sample_rate {loader.sample_rate}, expected_batch_size {optimizer.expected_batch_size}, "
          f"noise std on the mean gradient {1.0 / optimizer.expected_batch_size:.4f}")
