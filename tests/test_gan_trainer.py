from __future__ import annotations

import pytest
import torch
from custom.data.datasets import MakePhantomd, phantom_datalist
from custom.data.pose import RandHeadPosed
from custom.data.simulate import SimulateBiplanarXRayd, XRayAugmentation
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import hu_to_network
from custom.networks.discriminator import MultiScalePatchDiscriminator3d
from custom.networks.floor import fit_floor
from custom.networks.psctnet import psctnet
from custom.training.gan_trainer import PairedGanTrainer
from custom.training.losses import GeneratorLoss
from custom.training.random_state import RandomState
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.transforms import Compose, Lambdad
from monai.utils import set_determinism

GEOMETRY = BiplanarGeometry(vol_shape=(16,) * 3, vol_spacing=12.0, det_shape=(16, 16))


def _run(epochs: int, checkpoint_dir=None, resume_from=None, workers: int = 0) -> dict[str, torch.Tensor]:
    """A fresh tiny training 'process': build everything from the seed, optionally save or resume."""
    set_determinism(seed=0)
    transforms = Compose(
        [
            MakePhantomd(GEOMETRY),
            RandHeadPosed(keys="ct"),
            SimulateBiplanarXRayd(keys="ct", geometry=GEOMETRY, augmentation=XRayAugmentation()),
            Lambdad(keys="ct", func=hu_to_network, overwrite="target"),
        ]
    ).set_random_state(0)
    dataset = Dataset(phantom_datalist(3, seed=0), transforms)
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=workers)
    generator = psctnet("tiny", GEOMETRY)
    discriminator = MultiScalePatchDiscriminator3d(channels=2, num_layers=1, num_scales=1)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3, betas=(0.5, 0.99))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.5, 0.99))
    loss = GeneratorLoss(generator.projector)
    state = {
        "generator": generator,
        "discriminator": discriminator,
        "g_optimizer": g_optimizer,
        "d_optimizer": d_optimizer,
        "rng": RandomState(transforms),
    }
    handlers = []
    if checkpoint_dir is not None:
        handlers.append(CheckpointSaver(str(checkpoint_dir), state, save_interval=1, n_saved=1, epoch_level=True))
    if resume_from is not None:
        handlers.append(CheckpointLoader(str(resume_from), state))
    fit_floor(generator, loader, label_key="target")  # as the bundle does before a fresh run (a resumed one loads it)
    trainer = PairedGanTrainer(
        "cpu",
        epochs,
        loader,
        generator,
        discriminator,
        g_optimizer,
        d_optimizer,
        loss,
        condition=generator.projector.backproject,  # the BP-I prior, as the bundle's configs
        adversarial_start=4,  # the warm-up ends in the second epoch, after the interruption
        train_handlers=handlers,
    )
    state["trainer"] = trainer
    trainer.run()
    set_determinism(seed=None)
    return {**generator.state_dict(), **{f"d.{k}": v for k, v in discriminator.state_dict().items()}}, trainer


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_training_equals_uninterrupted_training(tmp_path, workers):
    uninterrupted, _ = _run(epochs=2, workers=workers)
    _run(epochs=1, checkpoint_dir=tmp_path, workers=workers)  # "interrupted" after one epoch
    (checkpoint,) = tmp_path.glob("*.pt")
    resumed, trainer = _run(epochs=2, resume_from=checkpoint, workers=workers)
    assert trainer.state.epoch == 2 and trainer.state.iteration == 6
    assert uninterrupted.keys() == resumed.keys()
    for name, value in uninterrupted.items():
        assert torch.allclose(value.float(), resumed[name].float(), atol=1e-6), name
    once_more, _ = _run(epochs=1, workers=workers)
    assert any(not torch.equal(once_more[k], uninterrupted[k]) for k in uninterrupted)  # training did move


def _sgd_trainer(generator, discriminator, batch: dict, epochs: int, **options) -> PairedGanTrainer:
    """A trainer over one batch per epoch, SGD at 0.1 for both networks, the BP-I prior as the condition."""
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (generator, discriminator)]
    loss = GeneratorLoss(generator.projector)
    options = {"condition": generator.projector.backproject, **options}
    return PairedGanTrainer("cpu", epochs, [batch], generator, discriminator, *optimizers, loss, **options)


def test_an_iteration_updates_both_networks_and_reports_the_terms():
    generator = psctnet("tiny", GEOMETRY)
    discriminator = MultiScalePatchDiscriminator3d(channels=2, num_layers=1, num_scales=1)
    before = [p.detach().clone() for p in (*generator.parameters(), *discriminator.parameters())]
    batch = {"image": torch.rand(2, 2, 16, 16), "target": torch.rand(2, 1, 16, 16, 16)}
    trainer = _sgd_trainer(generator, discriminator, batch, epochs=1)
    trainer.run()
    output = trainer.state.output
    assert output["loss"] == pytest.approx(output["adv"] + output["rec"] + output["proj"], rel=1e-5)
    assert output["d_loss"] > 0 and output["pred"].shape == (2, 1, 16, 16, 16)
    after = [p.detach() for p in (*generator.parameters(), *discriminator.parameters())]
    changed = [not torch.equal(a, b) for a, b in zip(before, after)]
    n_generator = len(list(generator.parameters()))
    assert any(changed[:n_generator]) and any(changed[n_generator:])
    assert all(p.grad is None for p in discriminator.parameters())  # no stale generator-step gradients


def test_the_adversarial_term_switches_on_after_the_configured_warm_up():
    generator = psctnet("tiny", GEOMETRY)
    discriminator = MultiScalePatchDiscriminator3d(channels=2, num_layers=1, num_scales=1)
    batch = {"image": torch.rand(1, 2, 16, 16), "target": torch.rand(1, 1, 16, 16, 16)}
    trainer = _sgd_trainer(generator, discriminator, batch, epochs=4, adversarial_start=2)
    seen = []

    def record(engine):
        weights = torch.cat([p.detach().flatten() for p in discriminator.parameters()])
        seen.append((engine.state.output["d_loss"], engine.state.output["adv"], weights.clone()))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    initial = torch.cat([p.detach().flatten() for p in discriminator.parameters()])
    trainer.run()
    (d1, adv1, w1), (d2, adv2, w2), (d3, adv3, w3), (d4, adv4, _) = seen
    assert d1 == d2 == adv1 == adv2 == 0 and torch.equal(w1, initial) and torch.equal(w2, initial)
    assert d3 > 0 and adv3 > 0 and not torch.equal(w3, initial)  # iteration 3: the first adversarial one
    assert d4 > 0 and adv4 > 0
    with pytest.raises(ValueError):
        _sgd_trainer(generator, discriminator, batch, epochs=1, adversarial_start=-1)


def test_a_conditioned_discriminator_sees_the_condition_of_the_views():
    generator = psctnet("tiny", GEOMETRY)
    discriminator = MultiScalePatchDiscriminator3d(channels=2, num_layers=1, num_scales=1, conditioned=True)
    seen = []

    def condition(views: torch.Tensor) -> torch.Tensor:
        seen.append(views)
        return generator.projector.backproject(views)

    batch = {"image": torch.rand(1, 2, 16, 16), "target": torch.rand(1, 1, 16, 16, 16)}
    trainer = _sgd_trainer(generator, discriminator, batch, epochs=1, condition=condition)
    trainer.run()
    assert len(seen) == 1 and torch.equal(seen[0], batch["image"]) and trainer.state.output["d_loss"] > 0
    with pytest.raises(ValueError, match="conditioned discriminator needs a condition"):
        _sgd_trainer(generator, discriminator, batch, epochs=1, condition=None)
    unconditioned = MultiScalePatchDiscriminator3d(channels=2, conditioned=False)
    with pytest.raises(ValueError, match="conditioned=False"):
        _sgd_trainer(generator, unconditioned, batch, epochs=1, condition=condition)
