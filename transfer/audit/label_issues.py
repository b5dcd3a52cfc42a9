"""Likely label errors: images whose class folder the data contradicts, by confident learning (cleanlab).

Every image gets class probabilities from a model that never saw it: L2-regularised logistic regression on the
standardised cached features (the head `train.head: logistic` trains, here with audit.logistic_c), cross-validated
over audit.folds stratified folds with audit.seed, every image scored by the fold that held it out. Its default C of
0.01, stronger than the head's 1.0, gives less overconfident probabilities: on generated classes with planted
errors it found as many and flagged a third as many others (tests/test_audit.py). cleanlab's `find_label_issues` then
estimates how often each class is filed as each other one (the confident joint) and returns the images most
likely filed in the wrong class, ranked by the probability of their given class (self-confidence), lowest first.

Classes with fewer images than folds cannot be cross-validated: their images are left out of this check and
counted in LabelIssues.unchecked_classes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

# BLAS threads during the cross-validation: L-BFGS makes many small BLAS calls, which more threads slow down, and
# on a shared machine threads that wait for busy cores slowed a fold down tenfold (seen on 2 cores).
BLAS_THREADS = 1
# Iterations of the logistic regression per fold: enough for its probabilities to settle on cached features, and a
# bound on the time (a fold that has not converged by then still ranks the images usefully).
MAX_ITERATIONS = 200


@dataclass(frozen=True)
class LabelIssues:
    images: np.ndarray  # image indices, most likely error first
    given_probability: np.ndarray  # out-of-fold probability of each one's given class (low: likely wrong)
    suggested: np.ndarray  # class index the model finds most likely, other than the given one
    suggested_probability: np.ndarray
    checked_images: int
    checked_classes: int
    unchecked_classes: list[int]  # class indices with fewer images than folds: not checked


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, c: float, folds: int, seed: int) -> np.ndarray:
    """(n, classes) probabilities, each row from the fold's model that held that image out; labels 0..classes-1."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITERATIONS))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings(), threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        probabilities = cross_val_predict(model, features, labels, cv=splits, method="predict_proba")
    return np.asarray(probabilities, dtype=np.float64)


def most_probable_other(probabilities: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most probable class other than its given one, and that probability: the suggestion (confident
    learning can flag an image whose given class is still its likeliest, when that class is often mislabelled)."""
    others = probabilities.copy()
    others[np.arange(len(given)), given] = -1.0
    suggested = others.argmax(axis=1)
    return suggested, others[np.arange(len(given)), suggested]


def find_label_issues(
    features: np.ndarray, labels: np.ndarray, n_classes: int, c: float, folds: int, seed: int
) -> LabelIssues:
    from cleanlab.filter import find_label_issues as confident_learning

    counts = np.bincount(labels, minlength=n_classes)
    checked = np.flatnonzero(counts >= folds)
    unchecked = np.flatnonzero((counts > 0) & (counts < folds)).tolist()
    rows = np.flatnonzero(np.isin(labels, checked))
    if len(checked) < 2:  # nothing to tell apart
        none = np.zeros(0, dtype=np.int64)
        return LabelIssues(none, np.zeros(0), none, np.zeros(0), 0, len(checked), unchecked)
    dense = np.searchsorted(checked, labels[rows])  # the checked classes renumbered 0..k-1
    probabilities = out_of_fold_probabilities(features[rows], dense, c, folds, seed)
    probabilities /= probabilities.sum(axis=1, keepdims=True)  # cleanlab wants rows summing to 1 exactly
    ranked = confident_learning(dense, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    suggested, suggested_probability = most_probable_other(probabilities[ranked], dense[ranked])
    return LabelIssues(
        images=rows[ranked],
        given_probability=probabilities[ranked, dense[ranked]],
        suggested=checked[suggested],
        suggested_probability=suggested_probability,
        checked_images=len(rows),
        checked_classes=len(checked),
        unchecked_classes=unchecked,
    )
