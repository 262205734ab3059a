import numpy as np
import pytest
import torch
from sklearn.metrics import label_ranking_average_precision_score

from fatlib.errors import DataError
from fatlib.metrics import LwlrapMetric, lwlrap, per_class_lwlrap, per_sample_lwlrap


def _random(n=60, c=7, seed=0):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, c)) < 0.25).astype(np.float32)
    truth[np.arange(n), rng.integers(0, c, n)] = 1
    scores = rng.random((n, c))  # continuous: tie-free with probability 1
    return truth, scores


def test_hand_worked_example():
    truth = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=np.float32)
    scores = np.array([[0.9, 0.8, 0.1, 0.5], [0.3, 0.2, 0.4, 0.1]])
    # clip 0: class 0 rank 1 -> 1/1; class 2 rank 4 -> 2/4. clip 1: class 1 rank 3 -> 1/3
    assert lwlrap(truth, scores) == pytest.approx((1 + 0.5 + 1 / 3) / 3)
    values, weights = per_class_lwlrap(truth, scores)
    np.testing.assert_allclose(values[:3], [1.0, 1 / 3, 0.5])
    assert np.isnan(values[3])
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(per_sample_lwlrap(truth, scores), [0.75, 1 / 3])


def test_sklearn_identity_on_tie_free_scores():
    truth, scores = _random()
    truth[3] = 0  # a clip without labels: excluded from the sklearn side
    nz = truth.sum(1) > 0
    expected = label_ranking_average_precision_score(truth[nz], scores[nz], sample_weight=truth[nz].sum(1))
    assert lwlrap(truth, scores) == pytest.approx(expected)
    # plain (unweighted) LRAP is a different number
    assert lwlrap(truth, scores) != pytest.approx(label_ranking_average_precision_score(truth[nz], scores[nz]))
    values, weights = per_class_lwlrap(truth, scores)
    assert np.nansum(values * weights) == pytest.approx(expected)
    per_clip = per_sample_lwlrap(truth, scores)
    np.testing.assert_allclose(per_clip[nz], [label_ranking_average_precision_score(t[None], s[None])
                                              for t, s in zip(truth[nz], scores[nz])])


def test_clips_without_labels_contribute_nothing():
    truth, scores = _random(seed=1)
    extra_truth = np.zeros((5, truth.shape[1]), dtype=np.float32)
    extra_scores = np.random.default_rng(2).random((5, truth.shape[1]))
    both = lwlrap(np.vstack([truth, extra_truth]), np.vstack([scores, extra_scores]))
    assert both == pytest.approx(lwlrap(truth, scores))
    assert np.isnan(per_sample_lwlrap(extra_truth, extra_scores)).all()
    assert np.isnan(lwlrap(extra_truth, extra_scores))


def test_single_class_is_perfect():
    truth = np.array([1, 1, 0, 1], dtype=np.float32)
    assert lwlrap(truth, np.array([0.1, 0.5, 0.3, 0.2])) == 1.0
    assert lwlrap(truth[:, None], np.array([[0.1], [0.5], [0.3], [0.2]])) == 1.0


# --- the official implementation (FAT2019 Colab, "calculate_per_class_lwlrap"), transcribed as
# published except ``np.int``/``np.bool`` (removed from numpy) -> ``int``/``bool``. Its ranking,
# ``np.argsort(scores)[::-1]``, uses the default sort of the numpy running the test, ties included.
def _one_sample_positive_class_precisions(scores, truth):
    num_classes = scores.shape[0]
    pos_class_indices = np.flatnonzero(truth > 0)
    # Only calculate precisions if there are some true classes.
    if not len(pos_class_indices):
        return pos_class_indices, np.zeros(0)
    # Retrieval list of classes for this sample.
    retrieved_classes = np.argsort(scores)[::-1]
    # class_rankings[top_scoring_class_index] == 0 etc.
    class_rankings = np.zeros(num_classes, dtype=int)
    class_rankings[retrieved_classes] = range(num_classes)
    # Which of these is a true label?
    retrieved_class_true = np.zeros(num_classes, dtype=bool)
    retrieved_class_true[class_rankings[pos_class_indices]] = True
    # Num hits for every truncated retrieval list.
    retrieved_cumulative_hits = np.cumsum(retrieved_class_true)
    # Precision of retrieval list truncated at each hit, in order of pos_labels.
    precision_at_hits = (
        retrieved_cumulative_hits[class_rankings[pos_class_indices]] /
        (1 + class_rankings[pos_class_indices].astype(float)))
    return pos_class_indices, precision_at_hits


def calculate_per_class_lwlrap(truth, scores):
    assert truth.shape == scores.shape
    num_samples, num_classes = scores.shape
    # Space to store a distinct precision value for each class on each sample.
    # Only the classes that are true for each sample will be filled in.
    precisions_for_samples_by_classes = np.zeros((num_samples, num_classes))
    for sample_num in range(num_samples):
        pos_class_indices, precision_at_hits = (
            _one_sample_positive_class_precisions(scores[sample_num, :], truth[sample_num, :]))
        precisions_for_samples_by_classes[sample_num, pos_class_indices] = precision_at_hits
    labels_per_class = np.sum(truth > 0, axis=0)
    weight_per_class = labels_per_class / float(np.sum(labels_per_class))
    # Form average of each column, i.e. all the precisions assigned to labels in
    # a particular class.
    per_class_lwlrap = (np.sum(precisions_for_samples_by_classes, axis=0) /
                        np.maximum(1, labels_per_class))
    # overall_lwlrap = simple average of all the actual per-class, per-sample precisions
    #                = np.sum(per_class_lwlrap * weight_per_class)
    return per_class_lwlrap, weight_per_class
# --- end of the official implementation


def _assert_matches_official(truth, scores):
    """fatlib's lwlrap, per-class values and weights, and per-clip values against the official code."""
    official_values, official_weights = calculate_per_class_lwlrap(truth, scores)
    assert lwlrap(truth, scores) == pytest.approx(np.sum(official_values * official_weights), abs=1e-12)
    values, weights = per_class_lwlrap(truth, scores)
    has = truth.sum(0) > 0  # a class without labels: NaN here, 0 (weight 0) in the official code
    np.testing.assert_allclose(values[has], official_values[has], rtol=0, atol=1e-12)
    assert np.isnan(values[~has]).all() and (official_values[~has] == 0).all()
    np.testing.assert_allclose(weights, official_weights, rtol=0, atol=1e-12)
    per_clip = per_sample_lwlrap(truth, scores)
    for i in range(len(truth)):
        _, prec = _one_sample_positive_class_precisions(scores[i], truth[i])
        if len(prec):
            assert per_clip[i] == pytest.approx(prec.mean(), abs=1e-12), (i, scores[i], truth[i])
        else:
            assert np.isnan(per_clip[i])


def _truth(rng, n, c):
    truth = (rng.random((n, c)) < 0.2).astype(np.float32)
    truth[np.arange(n), rng.integers(0, c, n)] = 1
    truth[::17] = 0  # some clips without labels
    return truth


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [3, 5, 12, 16, 17, 80])
def test_matches_the_official_code_on_random_tied_and_saturated_scores(dtype, n_classes):
    rng = np.random.default_rng(n_classes)
    n = 120
    truth = _truth(rng, n, n_classes)
    cases = {
        "random": rng.random((n, n_classes)),
        "grid2": rng.integers(0, 2, (n, n_classes)) / 2,  # many ties
        "grid4": rng.integers(0, 4, (n, n_classes)) / 4,
        "all equal": np.full((n, n_classes), 0.5),
        # saturated sigmoid: large logits all become exactly 1.0 in float32
        "saturated": 1 / (1 + np.exp(-rng.normal(30, 10, (n, n_classes)))),
        "mixed": np.where(rng.random((n, n_classes)) < 0.5, 1.0, rng.random((n, n_classes))),
    }
    for name, scores in cases.items():
        scores = scores.astype(dtype)
        assert name == "random" or len(np.unique(scores)) < scores.size  # the tied cases hold ties
        _assert_matches_official(truth, scores)


def test_tie_order_is_numpys_not_a_stable_sort():
    """On tied scores the official ranking is numpy's default argsort reversed; where this numpy's
    default sort is not stable (a SIMD sort), a stable sort gives other values and fatlib follows numpy."""
    rng = np.random.default_rng(7)
    truth = _truth(rng, 300, 80)
    scores = (rng.integers(0, 3, (300, 80)) / 3).astype(np.float32)
    _assert_matches_official(truth, scores)
    _assert_matches_official(truth, np.asfortranarray(scores))  # column-major: rows copied, same sort
    assert lwlrap(torch.from_numpy(truth), torch.from_numpy(scores)) == lwlrap(truth, scores)  # torch: same dtype
    stable = np.argsort(scores, axis=1, kind="stable")
    default = np.stack([np.argsort(row) for row in scores])
    if (stable != default).any():  # the case on numpy 2.x with AVX-512 / AVX2 sorts
        official, _ = calculate_per_class_lwlrap(truth, scores)
        with_stable, _ = calculate_per_class_lwlrap(truth, _stable_rank_scores(scores))
        assert not np.allclose(official, with_stable)
        assert not np.allclose(per_class_lwlrap(truth, scores)[0], with_stable, equal_nan=True)


def _stable_rank_scores(scores):
    """Tie-free scores that rank as ``argsort(scores, kind="stable")[::-1]`` (the rule fatlib had)."""
    out = np.empty(scores.shape)
    np.put_along_axis(out, np.argsort(scores, axis=1, kind="stable"), np.arange(scores.shape[1])[None], axis=1)
    return out


def test_saturated_scores_hand_worked():
    """All scores equal (saturated): each label's rank is its place in numpy's tie order, as officially."""
    scores = np.ones((5, 5), dtype=np.float32)
    truth = np.eye(5, dtype=np.float32)  # clip i has class i only
    order = np.argsort(scores[0])[::-1]  # this numpy's tie order, as the official code ranks
    expected = [1 / (1 + int(np.flatnonzero(order == i)[0])) for i in range(5)]
    np.testing.assert_allclose(per_sample_lwlrap(truth, scores), expected)
    assert sorted(expected) == pytest.approx([0.2, 0.25, 1 / 3, 0.5, 1.0])  # one clip gets 1.0, one 0.2
    assert lwlrap(truth, scores) == pytest.approx(np.mean(expected))


def test_stays_fast_on_a_fat2019_sized_set():
    rng = np.random.default_rng(0)
    truth = _truth(rng, 4000, 80)
    scores = (rng.integers(0, 50, (4000, 80)) / 50).astype(np.float32)
    fast = min(_timed(lambda: lwlrap(truth, scores)) for _ in range(3))
    slow = min(_timed(lambda: calculate_per_class_lwlrap(truth, scores)) for _ in range(2))
    assert fast < 0.25 and fast * 2 < slow, (fast, slow)  # measured: 0.012 s vs 0.044 s on 2 cores


def _timed(fn):
    import time

    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_torch_input_matches_numpy():
    truth, scores = _random(seed=3)
    assert lwlrap(torch.from_numpy(truth), torch.from_numpy(scores).float()) == pytest.approx(
        lwlrap(truth, scores.astype(np.float32)))


def test_bad_input_is_rejected():
    truth, scores = _random(seed=4)
    with pytest.raises(DataError, match="shape"):
        lwlrap(truth, scores[:, :-1])
    scores[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        lwlrap(truth, scores)


def test_fastai_metric_scores_the_whole_epoch():
    truth, scores = _random(n=90, c=6, seed=5)
    metric = LwlrapMetric()
    assert metric.name == "lwlrap"

    metric.reset()
    batch_values = []
    for sl in (slice(0, 7), slice(7, 40), slice(40, 90)):
        # what fastai's validation loop hands the metric after each batch
        metric.accum_values(torch.from_numpy(scores[sl]).float(), torch.from_numpy(truth[sl]))
        batch_values.append(lwlrap(truth[sl], scores[sl]))
    whole = lwlrap(truth, scores.astype(np.float32))
    assert metric.value == pytest.approx(whole)
    # a per-batch mean is a different number: the reason for accumulating
    assert np.mean(batch_values) != pytest.approx(whole, abs=1e-4)

