import pytest
import torch
from custom.training.schedule import linear_decay_schedule


def test_linear_decay_schedule():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = linear_decay_schedule(optimizer, constant_epochs=2, decay_epochs=3)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.25, 0.0])
    with pytest.raises(ValueError):
        linear_decay_schedule(optimizer, -1, 3)
