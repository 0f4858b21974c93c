"""Data-parallel training (eegloop.decoder.distributed): real gloo ranks on 127.0.0.1, started by torch's elastic
launcher, train the very network one process trains; checkpoints resume."""
from __future__ import annotations

import numpy as np
import pytest

from eegloop.decoder.distributed import FitPlan, Launch, fit_data_parallel, with_checkpoint


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, c, t = 128, 4, 32
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, c, t)).astype(np.float32)
    X[y == 1, 0, 10:20] += 1.0
    return X, y


@pytest.fixture(scope="module")
def plan(data):
    from eegloop.decoder.models import LSTMNet

    # no batch statistics, no dropout: the network whose DDP step is the one-process step (module docstring)
    cfg = LSTMNet(data[0].shape[1], 2, data[0].shape[2], hidden=8, layers=1, dropout=0.0, downsample=2).get_config()
    return FitPlan(model_config=cfg, epochs=3, batch_size=32, lr=1e-2, seed=3)


@pytest.fixture(scope="module")
def one(data, plan):
    return fit_data_parallel(data, plan)


@pytest.mark.slow
def test_two_gloo_ranks_train_what_one_process_trains(data, plan, one, tmp_path):
    two = fit_data_parallel(data, with_checkpoint(plan, tmp_path / "g.pt"), Launch(nproc=2))
    assert two.world_size == 2 and one.world_size == 1 and two.resumed_from == 0
    assert len(two.losses) == len(one.losses) == 3
    assert one.losses[-1] < one.losses[0]  # it learned something
    # tolerance: float32 sums in another order (2 shards' gradients averaged instead of one batch's mean)
    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5)
    assert set(two.state) == set(one.state)
    for k in one.state:
        np.testing.assert_allclose(two.state[k], one.state[k], atol=1e-5, err_msg=k)
    assert (tmp_path / "g.pt").is_file() and not (tmp_path / "g.pt.tmp").exists()
    assert not list(tmp_path.glob(".eegloop-tmp-*"))  # each epoch's file renamed into place whole


def test_a_checkpoint_resumes_after_its_last_epoch(data, plan, one, tmp_path):
    from dataclasses import replace

    ckpt = tmp_path / "c.pt"
    first = fit_data_parallel(data, with_checkpoint(replace(plan, epochs=2), ckpt))
    assert first.resumed_from == 0 and len(first.losses) == 2
    rest = fit_data_parallel(data, with_checkpoint(plan, ckpt))  # the same plan, 3 epochs: one more
    assert rest.resumed_from == 2 and len(rest.losses) == 3
    np.testing.assert_allclose(rest.losses, one.losses, rtol=1e-6)
    for k in one.state:
        np.testing.assert_allclose(rest.state[k], one.state[k], atol=1e-6, err_msg=k)
    done = fit_data_parallel(data, with_checkpoint(plan, ckpt))  # finished: nothing left to train
    assert done.resumed_from == 3 and done.losses == rest.losses


@pytest.mark.parametrize("launch, field", [
    (Launch(nproc=0), "--nproc"), (Launch(nnodes=2), "--rdzv-endpoint"), (Launch(max_restarts=-1), "--max-restarts"),
    (Launch(rdzv_endpoint="host"), "--rdzv-endpoint"), (Launch(rdzv_endpoint="h:99999"), "--rdzv-endpoint"),
    (Launch(rdzv_id="a b"), "--rdzv-id"), (Launch(backend="mpi"), "--backend"), (Launch(nproc=True), "--nproc"),
])
def test_a_launch_that_cannot_run_names_its_option(data, plan, launch, field):
    with pytest.raises(ValueError, match=field):
        fit_data_parallel(data, plan, launch)


def test_the_batch_must_split_over_the_ranks(data, plan):
    from dataclasses import replace

    with pytest.raises(ValueError, match="split evenly over the 3 ranks"):
        fit_data_parallel(data, plan, Launch(nproc=3))
    with pytest.raises(ValueError, match="fewer than one batch"):
        fit_data_parallel(data, replace(plan, batch_size=256))


@pytest.mark.slow
def test_a_rank_that_fails_ends_in_one_line_naming_its_error(data, plan, capfd):
    """Two real gloo ranks whose network cannot be built: the launcher's failure is one EegloopError naming the
    rank's own error; torch's logged traceback stays out of stderr (eegloop's debug log keeps it)."""
    from dataclasses import replace

    from eegloop.errors import EegloopError

    with pytest.raises(EegloopError, match=r"data-parallel training failed on rank \d: KeyError: 'nope'"):
        fit_data_parallel(data, replace(plan, model_config={"kind": "nope"}), Launch(nproc=2))
    assert "Traceback" not in capfd.readouterr().err


def test_a_checkpoint_of_another_network_is_refused_before_any_rank_starts(data, plan, one, tmp_path):
    from dataclasses import replace

    from eegloop.decoder.models import LSTMNet

    ckpt = tmp_path / "g.pt"
    fit_data_parallel(data, replace(with_checkpoint(plan, ckpt), epochs=1))
    wider = LSTMNet(data[0].shape[1], 2, data[0].shape[2], hidden=16, layers=1, dropout=0.0, downsample=2)
    with pytest.raises(ValueError, match="--checkpoint: .* holds another network's weights"):
        fit_data_parallel(data, replace(with_checkpoint(plan, ckpt), model_config=wider.get_config()))


def test_a_checkpoint_resumes_only_the_training_that_wrote_it(data, plan, tmp_path):
    """Other data (another subject's epochs), another seed or learning rate, or fewer epochs than it already holds:
    refused in one line before any rank starts (its weights would enter a model whose provenance names neither).
    The same training resumes; the file is the owner's alone, as models are."""
    from dataclasses import replace

    ckpt = tmp_path / "c.pt"
    fit_data_parallel(data, with_checkpoint(replace(plan, epochs=2), ckpt))
    assert (ckpt.stat().st_mode & 0o777) == 0o600
    X, y = data
    for other, plan2, says in (
            ((X[:-32], y[:-32]), plan, "written by another training"),
            (data, replace(plan, seed=4), "written by another training"),
            (data, replace(plan, lr=1e-3), "written by another training"),
            (data, replace(plan, epochs=1), "holds 2 finished epochs, more than the 1 asked for")):
        with pytest.raises(ValueError, match=f"^--checkpoint: .*{says}"):
            fit_data_parallel(other, with_checkpoint(plan2, ckpt))
    assert fit_data_parallel(data, with_checkpoint(plan, ckpt)).resumed_from == 2
