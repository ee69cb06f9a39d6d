"""Classification on frozen embeddings: SentEval-style linear probe, zero-shot by label
descriptions, and k-NN.

Linear probe: z-scored features, logistic regression (lbfgs), the inverse regularisation C
chosen from C_GRID on the dev split when there is one, else by 5-fold cross-validation
inside the training data; the test split is never used to choose. MR, CR, SUBJ and MPQA use
10-fold cross-validation over the provided `fold` field. Pair tasks (MRPC, SICK-E) use the
features [u, v, |u - v|, u * v].
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cpt_embed.errors import InputError
from cpt_embed.eval.context import Context, TaskResult
from cpt_embed.eval.data import Classification, load_classification, load_label_names
from cpt_embed.eval.topk import exact_topk

if TYPE_CHECKING:  # scikit-learn takes about a second to load: imported where it is used
    from sklearn.linear_model import LogisticRegression

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
MAX_ITER = 1000
# task -> how C is chosen: "folds" (10-fold CV over `fold`), "dev", or "cv" (inner CV)
PROBES = {
    "mr": "folds",
    "cr": "folds",
    "subj": "folds",
    "mpqa": "folds",
    "sst2": "dev",
    "trec": "cv",
    "mrpc": "cv",
    "sicke": "dev",
    "sst5": "dev",
    "20newsgroups": "cv",
    "imdb": "cv",
    "ag_news": "cv",
}
SENTEVAL_7 = ("mr", "cr", "subj", "mpqa", "sst2", "trec", "mrpc")
SENTEVAL_7_PROTOCOL = (
    "the SentEval-7 average: the linear-probe accuracy of MR, CR, SUBJ, MPQA, SST-2, TREC "
    "and MRPC, as the paper averages them"
)
ZERO_SHOT_TEMPLATE = "this is an example of a {label} movie review."
KNN_K = 256
KNN_K_SMALL = 10
METRICS = ("accuracy", "f1")
_CHOICE_OF_C = {
    "folds": "10-fold cross-validation over the records' folds, C chosen inside each",
    "dev": "C chosen on the dev split",
    "cv": "C chosen by 5-fold cross-validation inside the training split",
}


def _features(ctx: Context, split: Classification) -> np.ndarray:
    if split.pairs is None:
        return ctx.embed_unique(split.texts)
    left, right = split.pairs
    n = len(left)
    vectors = ctx.embed_unique(left + right)
    u, v = vectors[:n], vectors[n:]
    return np.hstack([u, v, np.abs(u - v), u * v])


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=MAX_ITER).fit(x, y)


def _fit_cv(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[LogisticRegression, float]:
    """Choose C by 5-fold stratified CV inside (x, y), then refit on all of it. Each fold
    walks C_GRID upwards warm-starting from the last solution, as a regularisation path."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    accuracy = {c: 0.0 for c in C_GRID}
    for fit_rows, score_rows in folds.split(x, y):
        model = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
        for c in sorted(C_GRID):
            model.set_params(C=c).fit(x[fit_rows], y[fit_rows])
            accuracy[c] += accuracy_score(y[score_rows], model.predict(x[score_rows]))
    best = max(C_GRID, key=lambda c: (accuracy[c], -c))
    return _fit(x, y, best), best


def probe_protocol(protocol: str) -> str:
    """How a linear probe's numbers are made, in words."""
    return (
        "linear probe (SentEval): logistic regression on z-scored frozen embeddings, "
        f"{_CHOICE_OF_C[protocol]}; f1: of label 1 for two labels, else the macro mean"
    )


def _scores(y_true: np.ndarray, y_pred: np.ndarray, f1: bool) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    scores = {"accuracy": 100.0 * accuracy_score(y_true, y_pred)}
    if f1:
        binary = set(np.unique(y_true)) <= {0, 1}
        scores["f1"] = 100.0 * f1_score(y_true, y_pred, average="binary" if binary else "macro")
    return scores


def run_probe(
    ctx: Context,
    task: str,
    folder: str | Path,
    protocol: str,
    split: str = "test",
    f1: bool = False,
) -> TaskResult:
    """Linear-probe accuracy (and F1 when asked: MRPC) of the classification `folder`
    (below the data dir unless absolute) on its `split`, C chosen by inner CV (`cv`) or on
    the dev split (`dev`), or over 10 folds of the records' `fold` field (`folds`)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    folder = ctx.data_dir / folder
    train = load_classification(folder / "train.jsonl", ctx.checksums)
    test = load_classification(folder / f"{split}.jsonl", ctx.checksums)
    x_train, x_test = _features(ctx, train), _features(ctx, test)
    y_train, y_test = np.array(train.labels), np.array(test.labels)
    # One BLAS thread: these are small problems, and OpenBLAS threads fighting torch's idle
    # OpenMP workers make every fit 25x slower on 2 cores.
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        if protocol == "folds":
            return _run_folds(task, train, test, x_train, x_test, ctx.seed, f1)
        if protocol == "dev":
            dev = load_classification(folder / "dev.jsonl", ctx.checksums)
            x_dev, y_dev = _features(ctx, dev), np.array(dev.labels)
            scaler = StandardScaler().fit(x_train)
            x_train, x_dev, x_test = (scaler.transform(a) for a in (x_train, x_dev, x_test))
            dev_acc = {
                c: accuracy_score(y_dev, _fit(x_train, y_train, c).predict(x_dev)) for c in C_GRID
            }
            best = max(C_GRID, key=lambda c: (dev_acc[c], -c))
            predicted = _fit(x_train, y_train, best).predict(x_test)
            details = {"C": best, "dev_accuracy": 100.0 * dev_acc[best]}
        else:
            scaler = StandardScaler().fit(x_train)
            model, best = _fit_cv(scaler.transform(x_train), y_train, ctx.seed)
            predicted = model.predict(scaler.transform(x_test))
            details = {"C": best}
    return TaskResult(
        task,
        "classification",
        "accuracy",
        _scores(y_test, predicted, f1),
        details,
        size=len(y_test),
        protocol=probe_protocol(protocol),
    )


def _run_folds(task, train, test, x_train, x_test, seed, f1) -> TaskResult:
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import StandardScaler

    if train.folds is None or test.folds is None:
        raise InputError(f"{task}: records need a `fold` field for 10-fold cross-validation")
    x = np.vstack([x_train, x_test])
    y = np.array(train.labels + test.labels)
    folds = np.array(train.folds + test.folds)
    accuracies, chosen = [], []
    predicted = np.empty_like(y)
    for fold in sorted(set(folds.tolist())):
        held = folds == fold
        scaler = StandardScaler().fit(x[~held])
        model, best = _fit_cv(scaler.transform(x[~held]), y[~held], seed)
        predicted[held] = model.predict(scaler.transform(x[held]))
        accuracies.append(100.0 * accuracy_score(y[held], predicted[held]))
        chosen.append(best)
    details = {"fold_accuracy": accuracies, "C_per_fold": chosen}
    scores = {"accuracy": float(np.mean(accuracies))}
    if f1:
        scores["f1"] = _scores(y, predicted, True)["f1"]
    return TaskResult(
        task,
        "classification",
        "accuracy",
        scores,
        details,
        size=len(y),
        protocol=probe_protocol("folds"),
    )


def run_zero_shot(ctx: Context, task: str = "sst2") -> TaskResult:
    """Each test text gets the label whose description embedding is the most similar: the
    paper's prompt ("this is an example of a positive movie review.") as the headline, the
    label words alone beside it."""
    folder = ctx.data_dir / "classification" / task
    names = load_label_names(folder)
    test = load_classification(folder / "test.jsonl", ctx.checksums)
    labels = np.array(sorted(names))
    texts = ctx.embed_unique(test.texts)
    y_test = np.array(test.labels)

    def accuracy(descriptions: list[str]) -> float:
        predicted = labels[np.argmax(texts @ ctx.embed(descriptions).T, axis=1)]
        return _scores(y_test, predicted, False)["accuracy"]

    scores = {
        "accuracy": accuracy([ZERO_SHOT_TEMPLATE.format(label=names[i]) for i in labels]),
        "accuracy_label_words": accuracy([names[i] for i in labels]),
    }
    return TaskResult(
        f"zeroshot_{task}",
        "zeroshot",
        "accuracy",
        scores,
        {"template": ZERO_SHOT_TEMPLATE},
        size=len(test.labels),
        protocol=f"zero-shot, the nearest label description: accuracy with the paper's prompt "
        f"{ZERO_SHOT_TEMPLATE!r}, accuracy_label_words with the label words alone",
    )


def _knn_predict(scores: np.ndarray, index: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """Majority label of each row's neighbours (ties: the higher summed similarity)."""
    predicted = []
    for row_scores, row_index in zip(scores, index, strict=True):
        votes, weight = Counter(), Counter()
        for s, i in zip(row_scores, row_index, strict=True):
            votes[y_train[i]] += 1
            weight[y_train[i]] += s
        predicted.append(max(votes, key=lambda label: (votes[label], weight[label])))
    return np.array(predicted)


def run_knn(ctx: Context, task: str = "sst2", k: int = KNN_K) -> TaskResult:
    """Majority label of the k most similar training texts: k = 256 as in the paper (the
    headline), and k = 10 beside it."""
    folder = ctx.data_dir / "classification" / task
    train = load_classification(folder / "train.jsonl", ctx.checksums)
    test = load_classification(folder / "test.jsonl", ctx.checksums)
    x_train, x_test = ctx.embed_unique(train.texts), ctx.embed_unique(test.texts)
    norms = np.linalg.norm(x_train, axis=1, keepdims=True)
    scores, index = exact_topk(
        x_test / np.linalg.norm(x_test, axis=1, keepdims=True),
        x_train / np.maximum(norms, 1e-12),
        max(k, KNN_K_SMALL),
    )
    y_train, y_test = np.array(train.labels), np.array(test.labels)
    results = {
        "accuracy": _knn_predict(scores[:, :k], index[:, :k], y_train),
        f"accuracy_k{KNN_K_SMALL}": _knn_predict(
            scores[:, :KNN_K_SMALL], index[:, :KNN_K_SMALL], y_train
        ),
    }
    return TaskResult(
        f"knn_{task}",
        "knn",
        "accuracy",
        {name: _scores(y_test, p, False)["accuracy"] for name, p in results.items()},
        {"k": k},
        size=len(test.labels),
        protocol=f"k-NN by cosine, the majority label of the k most similar training texts: "
        f"accuracy with k = {k} (the paper's), accuracy_k{KNN_K_SMALL} with k = {KNN_K_SMALL}",
    )
