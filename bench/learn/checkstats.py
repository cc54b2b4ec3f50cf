"""bench/learn/checkstats.py - statistics of check's confidences shared by calib.py and
checkrefs.py (pairs of (confidence, genuine))."""


def ece_brier(pairs):
    """Calibration error at the prior the fit assumes (genuine and other products at equal weight):
    expected calibration error over 10 equal-width confidence bins (Naeini et al. 2015) and the
    Brier score, each genuine pair weighing 1/P and each other-product pair 1/N."""
    P = sum(1 for _, gen in pairs if gen)
    N = len(pairs) - P
    bins = [[0.0, 0.0, 0.0] for _ in range(10)]  # weight, sum of confidence, weight of genuine
    brier = 0.0
    for c, gen in pairs:
        w = 0.5 / P if gen else 0.5 / N
        b = bins[min(9, int(c * 10))]
        b[0] += w
        b[1] += w * c
        b[2] += w * gen
        brier += w * (c - gen) ** 2
    return sum(abs(b[1] - b[2]) for b in bins if b[0] > 0), brier


def best_threshold(genuine, others, far=0.02):
    """The best share of genuine confidences any single threshold accepts with at most `far` of
    the other-product confidences (chosen on these pairs themselves: a bound, not a result)."""
    o = sorted(others, reverse=True)
    k = int(far * len(o))  # at most k other-product pairs accepted: threshold above o[k]
    t = o[k] if k < len(o) else -1.0
    return sum(c > t for c in genuine) / len(genuine)
