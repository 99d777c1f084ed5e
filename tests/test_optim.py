import math

import pytest
import torch

from seqtrain.errors import ConfigError
from seqtrain.optim import OPTIMIZERS, OptimConfig, SchedConfig, Schedule, build_optimizer, l1_penalty


def lrs(sched: SchedConfig, steps: int, total: int | None = None, lr: float = 1.0) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD([param], lr=lr)
    schedule = Schedule(opt, sched, total)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return out


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_reduces_a_quadratic(name):
    w = torch.nn.Parameter(torch.tensor([[3.0, -2.0]]))
    opt = build_optimizer([w], OptimConfig(name=name, lr=0.1, momentum=0.5 if name in ("sgd", "rmsprop") else 0.0))
    for _ in range(50):
        loss = (w**2).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert (w**2).sum() < 13.0 * 0.5


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "rmsprop"])
def test_fused_updates_match_the_standard_implementation(name):
    """The fused kernels are the default for speed; they must compute the same steps."""
    torch.manual_seed(0)
    start, target = torch.randn(8, 5), torch.randn(8, 5)
    trained = []
    for fused in (True, False):
        w = torch.nn.Parameter(start.clone())
        opt = build_optimizer(
            [w], OptimConfig(name=name, lr=0.05, weight_decay=0.1, momentum=0.9 if name == "sgd" else 0.0, fused=fused)
        )
        assert opt.defaults["fused"] is (True if fused else None)
        for _ in range(20):
            ((w - target) ** 2).sum().backward()
            opt.step()
            opt.zero_grad()
        trained.append(w.detach())
    torch.testing.assert_close(trained[0], trained[1], atol=1e-5, rtol=1e-5)
    assert not torch.equal(trained[0], start)


def test_weight_decay_skips_biases():
    weight, bias = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer([weight, bias], OptimConfig(name="sgd", lr=0.1, weight_decay=0.5))
    decays = {len(g["params"][0].shape): g["weight_decay"] for g in opt.param_groups}
    assert decays == {2: 0.5, 1: 0.0}


def test_l1_penalty_sums_absolute_weight_matrices_only():
    assert l1_penalty([torch.nn.Parameter(-torch.ones(2, 3)), torch.nn.Parameter(torch.ones(5))]).item() == 6.0


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="positive"):
        OptimConfig(lr=-1)
    with pytest.raises(ConfigError, match="nesterov"):
        OptimConfig(name="adam", nesterov=True)
    with pytest.raises(ConfigError, match="unknown"):
        SchedConfig(name="wavy")


def test_warmup_then_cosine_reaches_the_floor_at_the_end():
    out = lrs(SchedConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1), steps=111, total=110)
    assert out[0] < 0.1 and out[:11] == sorted(out[:11])
    assert out[10] == pytest.approx(1.0)
    assert out[110] == pytest.approx(0.1, abs=1e-3)
    assert out[10:] == sorted(out[10:], reverse=True)


def test_linear_decay_and_step_and_exponential():
    assert lrs(SchedConfig(name="linear", min_lr_ratio=0.0), 101, total=100)[100] == pytest.approx(0.0, abs=1e-9)
    step = lrs(SchedConfig(name="step", gamma=0.1, step_size=5), 11)
    assert step[4] == 1.0 and step[5] == pytest.approx(0.1) and step[10] == pytest.approx(0.01)
    assert lrs(SchedConfig(name="exponential", gamma=0.5, step_size=10), 11)[10] == pytest.approx(0.5)


def test_inverse_sqrt_is_continuous_after_warmup():
    out = lrs(SchedConfig(name="inverse_sqrt", warmup_steps=100), 500)
    assert out[100] == pytest.approx(1.0)
    assert out[400] == pytest.approx(math.sqrt(100 / 400))


def test_cosine_without_a_known_length_is_a_config_error():
    with pytest.raises(ConfigError, match="max_steps"):
        lrs(SchedConfig(name="cosine"), 1, total=None)


def test_newbob_anneals_only_when_validation_stalls():
    param = torch.nn.Parameter(torch.zeros(1, 1))
    opt = torch.optim.SGD([param], lr=1.0)
    schedule = Schedule(opt, SchedConfig(name="newbob", factor=0.5, patience=0), None)
    for metric, best in ((3.0, 3.0), (2.0, 3.0), (2.5, 2.0), (1.0, 2.0), (1.5, 1.0)):  # validation loss, best before it
        schedule.validated(metric <= best)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)


def test_newbob_stops_annealing_at_its_floor_of_the_lr_before_warmup():
    param = torch.nn.Parameter(torch.zeros(1, 1))
    opt = torch.optim.SGD([param], lr=2.0)
    schedule = Schedule(opt, SchedConfig(name="newbob", warmup_steps=10, min_lr_ratio=0.1), None)
    for _ in range(10):
        opt.step()
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0)
    for _ in range(3):
        schedule.validated(False)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
    for _ in range(3):
        schedule.validated(False)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)


def test_schedule_state_round_trips():
    param = torch.nn.Parameter(torch.zeros(1, 1))
    opt = torch.optim.SGD([param], lr=1.0)
    cfg = SchedConfig(name="cosine", warmup_steps=5)
    schedule = Schedule(opt, cfg, 50)
    for _ in range(20):
        opt.step()
        schedule.step()
    fresh_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, 1))], lr=1.0)
    fresh = Schedule(fresh_opt, cfg, 50)
    fresh.load_state_dict(schedule.state_dict())
    fresh_opt.load_state_dict(opt.state_dict())
    for _ in range(5):
        opt.step(), schedule.step(), fresh_opt.step(), fresh.step()
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def time_budget_lrs(
    sched: SchedConfig, clock: list[float], budget: float = 100.0
) -> tuple[list[float], Schedule, torch.optim.Optimizer]:
    """The LR before each step when step i ends at training time clock[i]."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    schedule = Schedule(opt, sched, None, time_budget_s=budget)
    out = []
    for elapsed in clock:
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step(elapsed)
    return out, schedule, opt


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_time_budget_schedules_reach_their_floor_when_the_budget_ends_at_any_step_rate(name):
    sched = SchedConfig(name=name, min_lr_ratio=0.1)
    fast, _, _ = time_budget_lrs(sched, [i * 0.5 for i in range(1, 201)])  # 200 steps of 0.5 s
    slow, _, _ = time_budget_lrs(sched, [i * 5.0 for i in range(1, 21)])  # 20 steps of 5 s
    assert fast[0] == slow[0] == 1.0
    assert fast[100] == pytest.approx(slow[10]) == pytest.approx(0.55)  # half the budget: halfway, either shape
    assert fast[-1] < 0.15 and slow[-1] < 0.15  # the last steps run near the floor
    _, schedule, opt = time_budget_lrs(sched, [50.0, 100.0, 130.0])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # at and past the budget: the floor


def test_time_budget_cosine_has_the_shape_of_the_step_cosine():
    sched = SchedConfig(name="cosine", min_lr_ratio=0.0)
    by_time, _, _ = time_budget_lrs(sched, [float(i) for i in range(1, 101)])
    by_steps = lrs(sched, 100, total=100)
    for a, b in zip(by_time, by_steps):
        assert a == pytest.approx(b, abs=1e-9)


def test_time_budget_warmup_runs_over_steps_then_decays_over_the_time_left():
    sched = SchedConfig(name="linear", warmup_steps=4, min_lr_ratio=0.0)
    lr, _, _ = time_budget_lrs(sched, [10.0, 20.0, 30.0, 40.0, 70.0, 100.0])
    assert lr[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # as the step-based warmup
    assert lr[5] == pytest.approx(0.5)  # warmup ended at 40 s: 70 s is halfway through the 60 s left


def test_time_budget_state_resumes_the_same_lr():
    sched = SchedConfig(name="cosine", warmup_steps=2, min_lr_ratio=0.1)
    _, schedule, opt = time_budget_lrs(sched, [5.0, 10.0, 30.0])
    state = schedule.state_dict()
    fresh_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    fresh = Schedule(fresh_opt, sched, None, time_budget_s=100.0)
    fresh.load_state_dict(state)
    fresh_opt.load_state_dict(opt.state_dict())
    for s, o in ((schedule, opt), (fresh, fresh_opt)):
        o.step()
        s.step(55.0)
    assert fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"] < 1.0
    assert fresh.time_factor.warmup_end == 10.0


def test_linear_and_cosine_without_any_budget_are_a_config_error():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    with pytest.raises(ConfigError, match="needs a known length"):
        Schedule(opt, SchedConfig(name="cosine"), None)


def both_budgets_lrs(
    sched: SchedConfig, seconds_per_step: float, total_steps: int = 100, budget: float = 100.0
) -> list[float]:
    """The LR before each step of a run with a step budget and a time budget, at a steady step rate."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    schedule = Schedule(opt, sched, total_steps, time_budget_s=budget)
    out = []
    for step in range(1, total_steps + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step(step * seconds_per_step)
    return out


def test_with_both_budgets_the_one_that_ends_first_sets_the_decay():
    sched = SchedConfig(name="linear", warmup_steps=10, min_lr_ratio=0.0)
    steps_first = both_budgets_lrs(sched, seconds_per_step=0.5)  # 100 steps take 50 s of the 100
    assert steps_first == pytest.approx(lrs(sched, 100, total=100), abs=1e-12)  # exactly the step schedule
    time_first = both_budgets_lrs(sched, seconds_per_step=2.0)  # the budget ends at step 50
    assert time_first[:10] == steps_first[:10]  # warmup over steps either way
    assert time_first[30] == pytest.approx(
        0.5
    )  # warmup ended at 20 s; after step 30, 60 s is halfway through the 80 s left
    assert time_first[49] == pytest.approx(2 / 80)  # the last step inside the budget runs near the floor
