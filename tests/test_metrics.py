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


def _official_lwlrap(truth, scores):
    """The competition's reference code (per-clip precisions with ``np.argsort(scores)[::-1]``,
    label-weighted), transcribed. 2019's numpy sorted fewer than 16 values by insertion sort (stable);
    numpy >= 1.25 may use a SIMD sort with no defined tie order, hence ``kind="stable"`` here."""
    hits_sum, n_pos = 0.0, 0
    for t, s in zip(truth, scores):
        pos = np.flatnonzero(t > 0)
        if not len(pos):
            continue
        retrieved = np.argsort(s, kind="stable")[::-1]
        rank = np.zeros(len(s), dtype=int)
        rank[retrieved] = range(len(s))
        true_at = np.zeros(len(s), dtype=bool)
        true_at[rank[pos]] = True
        cum = np.cumsum(true_at)
        hits_sum += float((cum[rank[pos]] / (1 + rank[pos])).sum())
        n_pos += len(pos)
    return hits_sum / n_pos


def test_ties_go_to_the_higher_class_index_as_the_official_code():
    tied = np.array([[0.5, 0.5, 0.5]])
    # argsort()[::-1]: among equal scores the highest class index ranks first
    assert lwlrap(np.array([[0, 0, 1]]), tied) == 1.0
    assert lwlrap(np.array([[0, 1, 0]]), tied) == pytest.approx(0.5)
    assert lwlrap(np.array([[1, 0, 0]]), tied) == pytest.approx(1 / 3)
    # a stage-4 "lwlrap3 == 1" decision on exactly equal scores: kept only when the tie goes its way
    truth = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1]], dtype=np.float32)
    scores = np.array([[0.9, 0.9, 0.1, 0.0], [0.2, 0.0, 0.7, 0.7], [0.3, 0.6, 0.6, 0.6]])
    assert per_sample_lwlrap(truth, scores).tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert lwlrap(truth, scores) == pytest.approx(_official_lwlrap(truth, scores))
    rng = np.random.default_rng(0)  # many ties (scores on a coarse grid): same as the official code
    truth = (rng.random((200, 12)) < 0.2).astype(np.float32)
    scores = rng.integers(0, 4, (200, 12)) / 4
    assert lwlrap(truth, scores) == pytest.approx(_official_lwlrap(truth, scores))


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

