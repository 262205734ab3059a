import numpy as np
import pytest

from fatlib.ensemble import combine, combine_groups, rescale_per_class
from fatlib.errors import DataError

A = np.array([[0.2, 0.9], [0.4, 0.1]], dtype=np.float32)
B = np.array([[0.8, 0.1], [0.1, 0.9]], dtype=np.float32)


def test_mean_and_weights():
    np.testing.assert_allclose(combine([A, B]), [[0.5, 0.5], [0.25, 0.5]], rtol=1e-6)
    # weights are relative: 3:1 == 0.75:0.25
    np.testing.assert_allclose(combine([A, B], weights=[3, 1]), 0.75 * A + 0.25 * B, rtol=1e-6)
    np.testing.assert_allclose(combine(np.stack([A, B]), weights=[0, 1]), B, rtol=1e-6)


def test_geometric_mean():
    g = combine([A, B], method="geometric")
    np.testing.assert_allclose(g, np.sqrt(A * B), rtol=1e-5)
    # the geometric mean never exceeds the arithmetic mean, and is lower where the models disagree
    assert (g <= combine([A, B]) + 1e-7).all()
    assert g[0, 1] == pytest.approx(0.3, rel=1e-5)
    # a zero does not zero the class entirely (log is floored)
    z = combine([np.zeros((1, 2)), np.ones((1, 2))], method="geometric")
    assert (z > 0).all() and (z < 1e-3).all()


def test_rescale_per_class():
    s = np.array([[0.1, 0.5, 0.3], [0.2, 0.5, 0.3], [0.3, 0.5, 0.9]], dtype=np.float32)
    r = rescale_per_class(s)
    np.testing.assert_allclose(r[:, 0], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(r[:, 1], s[:, 1])  # constant column kept
    np.testing.assert_allclose(r[:, 2], [0.0, 0.0, 1.0], atol=1e-6)


def test_rescale_changes_the_ensemble_balance():
    # model 2's scores for class 0 live in a narrow band; rescaled they count as much as model 1's
    m1 = np.array([[0.0, 0.5], [1.0, 0.5]])
    m2 = np.array([[0.51, 0.5], [0.49, 0.5]])
    plain = combine([m1, m2])
    rescaled = combine([m1, m2], rescale=True)
    assert plain[1, 0] > plain[0, 0]  # model 1 dominates without rescaling
    np.testing.assert_allclose(rescaled[:, 0], [0.5, 0.5], atol=1e-6)  # a tie once both span [0, 1]


def test_combine_groups_two_levels():
    folds_s2 = [np.full((2, 2), 0.2), np.full((2, 2), 0.4)]  # stage mean 0.3
    folds_s3 = [np.full((2, 2), 0.9)]
    out, per = combine_groups(folds_s2 + folds_s3, ["s2", "s2", "s3"])
    np.testing.assert_allclose(per["s2"], 0.3, rtol=1e-6)
    np.testing.assert_allclose(out, 0.6, rtol=1e-6)  # groups weigh equally, not folds
    out_w, _ = combine_groups(folds_s2 + folds_s3, ["s2", "s2", "s3"], weights={"s3": 3.0})
    np.testing.assert_allclose(out_w, 0.25 * 0.3 + 0.75 * 0.9, rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: combine([A, B[:1]]), "different shapes"),
        (lambda: combine([A, np.full_like(A, np.nan)]), "NaN"),
        (lambda: combine([A, B], method="median"), "unknown"),
        (lambda: combine([A, B], weights=[1]), "one weight per matrix"),
        (lambda: combine([A, B], weights=[-1, 2]), "non-negative"),
        (lambda: combine([A, -B], method="geometric"), "logits"),
        (lambda: combine([]), "no score matrices"),
        (lambda: combine_groups([A, B], ["a"]), "one label per matrix"),
        (lambda: combine_groups([A, B], ["a", "b"], weights={"c": 1}), "unknown groups"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(DataError, match=match):
        call()
