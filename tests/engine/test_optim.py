"""The learning-rate schedule and the weight average of the training loop."""
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detviz.engine.optim import ModelEMA, learning_rate


def test_learning_rate_warmup_and_cosine():
    assert learning_rate(1.0, 0, 0.0, warmup_steps=4) == pytest.approx(0.25)
    assert learning_rate(1.0, 3, 0.0, warmup_steps=4) == pytest.approx(1.0)
    assert learning_rate(1.0, 10, 0.5, min_ratio=0.0) == pytest.approx(0.5)
    assert learning_rate(1.0, 10, 1.0, min_ratio=0.05) == pytest.approx(0.05)
    assert learning_rate(1.0, 10, 0.7, schedule="constant") == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        learning_rate(1.0, 0, 0.0, schedule="step")


def test_ema_follows_the_formula_and_copies_integer_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, ramp=1.0)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()
    model(torch.randn(4, 2))  # moves the BatchNorm statistics and counts one batch
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1.0))
    now = ema.module.state_dict()
    assert_close(now["0.weight"], d * start["0.weight"] + (1 - d) * model[0].weight)
    assert_close(now["1.running_mean"], d * start["1.running_mean"] + (1 - d) * model[1].running_mean)
    assert now["1.num_batches_tracked"].item() == 1
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        ModelEMA(model, decay=1.0)
