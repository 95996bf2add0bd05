"""How well a score agrees with quality labels, with and without length.

Pure Python (the standard library only), so the small benchmark in CI needs
nothing installed. Every function takes plain lists; scores are oriented so
that higher means "keep" (a keep-low score is negated by its caller).
"""

import math


def auc(pos, neg):
    """P(a random positive scores above a random negative), ties half."""
    if not pos or not neg:
        return float("nan")
    ranked = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    # Mann-Whitney U from average ranks, so ties count half.
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2  # 1-based average rank of the tie block
        rank_sum += avg * sum(1 for k in range(i, j) if ranked[k][1] == 1)
        i = j
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def ranks(xs):
    """Average ranks (1-based), ties sharing their mean rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and xs[order[j]] == xs[order[i]]:
            j += 1
        for k in range(i, j):
            r[order[k]] = (i + j + 1) / 2
        i = j
    return r


def pearson(a, b):
    n = len(a)
    if n < 3:
        return float("nan")
    ma, mb = sum(a) / n, sum(b) / n
    sab = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    saa = sum((x - ma) ** 2 for x in a)
    sbb = sum((y - mb) ** 2 for y in b)
    if saa == 0 or sbb == 0:
        return float("nan")
    return sab / math.sqrt(saa * sbb)


def spearman(a, b):
    return pearson(ranks(a), ranks(b))


def partial_spearman(a, b, c):
    """Rank correlation of `a` and `b` with `c` held fixed (on ranks)."""
    rab, rac, rbc = spearman(a, b), spearman(a, c), spearman(b, c)
    denom = math.sqrt(max(0.0, (1 - rac**2) * (1 - rbc**2)))
    if denom == 0 or any(map(math.isnan, (rab, rac, rbc))):
        return float("nan")
    return (rab - rac * rbc) / denom


def agreement(comparisons):
    """Share of (better, worse) score pairs the score orders the labels'
    way, ties half; `comparisons` is a list of (score_better, score_worse)."""
    if not comparisons:
        return float("nan")
    return sum(1.0 if b > w else 0.5 if b == w else 0.0 for b, w in comparisons) / len(comparisons)


def keep_top_half(scores, labels):
    """Mean label of the half a keep-top 0.5 filter keeps, and of the half
    it drops (records ranked by score, ties by input order, as main-score)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    k = round(0.5 * len(scores))
    kept, dropped = order[:k], order[k:]
    mean = lambda idx: sum(labels[i] for i in idx) / len(idx) if idx else float("nan")
    return mean(kept), mean(dropped)
