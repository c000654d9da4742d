"""bench.choose: which of several models timed together a timing-based choice keeps (round_to auto, --precision
latency, --auto's ranking). On a loaded 2-core host p50 flipped round_to auto's choice 16 -> 32 -> 16 between runs;
load only adds time, so the choice reads the fastest runs, and calls a difference within the noise a tie."""
import numpy as np

from edgekit import bench

WHERE = {"cpu": "test", "threads": 1}


def timed(ms: float, seed: int, runs: int = 30, slowed: float = 0.0, spikes: int = 0):
    """Runs of a model taking `ms`, with 2% jitter; `slowed`: the share of runs another job stretched by 30-150%;
    `spikes`: runs 10x as long."""
    rng = np.random.default_rng(seed)
    t = ms * (1 + 0.02 * rng.random(runs))
    hit = rng.random(runs) < slowed
    t[hit] *= 1.3 + 1.2 * rng.random(hit.sum())
    t[:spikes] *= 10
    return bench.summarize(list(rng.permutation(t)), 1.0, 1, WHERE)


def test_load_on_a_candidates_runs_does_not_penalise_it():
    """Another job stretched 60% of the faster model's runs (its p50 is the slower one's) and a few ran 10x: it wins."""
    lat = {"a": timed(8.0, 1, slowed=0.6, spikes=3), "b": timed(10.0, 2)}
    assert lat["a"].p50_ms > lat["b"].p50_ms  # what the old rule (p50) read
    for prefer in (["a", "b"], ["b", "a"]):
        choice = bench.choose(lat, prefer)
        assert choice.chosen == "a" and choice.tie == (), choice
    assert choice.as_dict()["estimator"] == bench.ESTIMATOR


def test_equal_candidates_are_a_tie_and_the_preferred_one_is_kept():
    """Same model, different noise (and load on one): a tie, whichever order; the stated preference wins."""
    for seed in range(5):
        lat = {8: timed(10.0, seed), 16: timed(10.0, seed + 100, slowed=0.3), 32: timed(10.0, seed + 200)}
        for prefer in ([8, 16, 32], [32, 16, 8]):
            choice = bench.choose(lat, prefer)
            assert choice.chosen == prefer[0] and set(choice.tie) == set(prefer[1:]), choice
            assert choice.as_dict()["tie"] == [str(k) for k in prefer[1:]]


def test_a_faster_candidate_wins_over_the_preferred_one():
    """20% faster wins through load on both; 6% faster wins on quiet runs (a real difference is still seen)."""
    for seed in range(5):
        lat = {"kept": timed(10.0, seed, slowed=0.5), "trial": timed(8.0, seed + 50, slowed=0.5)}
        choice = bench.choose(lat, ["kept", "trial"])
        assert choice.chosen == "trial" and choice.tie == (), choice
        lat = {"kept": timed(10.0, seed), "trial": timed(9.4, seed + 50)}
        assert bench.choose(lat, ["kept", "trial"]).chosen == "trial"


def test_the_reported_latency_is_unchanged():
    """The runs are kept for choices only: a package's latency record has the same keys and percentiles."""
    lat = timed(10.0, 0, slowed=0.5)
    assert "times_ms" not in lat.as_dict() and len(lat.times_ms) == lat.runs == 30
    assert lat.p50_ms == round(float(np.percentile(lat.times_ms, 50)), 4)


def test_a_tie_names_only_the_models_the_preference_kept_away():
    """8 clearly slower than 32 but within the noise of 16: 16 is kept, and 8 is no tie of it (it was passed over for
    being slower, not for the preference), which round_to auto's note ("the smaller multiple kept") said it was."""
    lat = {8: timed(10.0, 1, spikes=0), 16: timed(9.8, 2), 32: timed(9.6, 3)}
    assert bench.clearly_faster(lat[32], lat[8]) and not bench.clearly_faster(lat[32], lat[16])
    choice = bench.choose(lat, [8, 16, 32])
    assert choice.chosen == 16 and choice.tie == (32,), choice


def test_round_to_auto_says_the_figures_it_chose_on():
    """The kept multiple may show the higher p50 (load on its runs): the line names and shows the figures that chose."""
    from edgekit.rounding import RoundingChoice

    lat = {8: timed(8.0, 1, slowed=0.6, spikes=3), 16: timed(10.0, 2)}
    picked = bench.choose(lat, [8, 16])
    said = RoundingChoice(picked.chosen, {k: v.p50_ms for k, v in lat.items()}, "desktop-x86", 1, {"cpu": "test", "isa": "avx2"},
                          {8: 100, 16: 120}, (), picked.as_dict()).describe()
    assert picked.chosen == 8 and lat[8].p50_ms > lat[16].p50_ms
    assert f"chosen on the {bench.ESTIMATOR}: 8: {picked.figures_ms[8]:.2f} ms, 16: " in said, said


def test_models_timed_round_robin_are_resampled_by_round():
    """Load drifting 1-3x from round to round hits both models of a round alike: a model 5% faster in every round was
    a tie in 19 seeds of 20, each model's runs resampled on their own. Resampled by round, it is faster in each."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        load = 1 + 2 * rng.random(40)  # each round's
        a, b = (bench.summarize(list(ms * load * (1 + 0.002 * rng.random(40))), 1.0, 1, WHERE) for ms in (9.5, 10.0))
        assert bench.clearly_faster(a, b) and not bench.clearly_faster(b, a), seed


def test_keep_fp32_advice_reads_the_figure_choose_reads():
    """"keep fp32" compared one loop's p50s: int8 whose runs another job stretched (its p50 past fp32's, its fastest
    runs 20% faster) was called slower than float, and a tie within the noise too. It is said where fp32 is clearly
    faster by choose's figure alone."""
    from edgekit import precision

    loaded_int8, fp32 = timed(8.0, 1, slowed=0.6, spikes=3), timed(10.0, 2)
    assert loaded_int8.p50_ms > fp32.p50_ms  # what the old advice read
    assert precision.keep_fp32(loaded_int8, fp32) == ""
    assert precision.keep_fp32(timed(10.0, 3), timed(10.0, 4)) == ""  # a tie
    said = precision.keep_fp32(timed(10.0, 5), timed(8.0, 6), kept=2)
    assert said.startswith("keep fp32: int8 slower than float here: ") and bench.ESTIMATOR in said, said
    assert "2 node(s) in float for speed" in said


def test_runs_timed_round_robin_are_resampled_a_round_at_a_time():
    """A round is runner.BLOCK runs of one model, then of the other: resampled run by run (pairing run k of each), two
    models timed alike under load drifting 1-3x a round were "clearly" apart in 11 seeds of 200 (each run's load its
    own: none). Whole rounds are drawn: a round's load is one draw, as it was one."""
    from edgekit import runner

    apart = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        load = np.repeat(1 + 2 * rng.random(10), runner.BLOCK)

        def timed_alike():
            spikes = 1 + (rng.random(load.size) < 0.1) * rng.random(load.size) * 2
            return bench.summarize(list(10.0 * load * spikes * (1 + 0.02 * rng.random(load.size))), 1.0, 1, WHERE)

        a, b = timed_alike(), timed_alike()
        apart += bench.clearly_faster(a, b) or bench.clearly_faster(b, a)
    assert apart <= 6, apart
