"""How rates, differences and p-values read in every Markdown table (study tables, comparisons)."""

from __future__ import annotations


def percent_ci(rate, ci) -> str:
    """'12.3% [8.0, 17.1]'; 'n/a' without a rate."""
    if rate is None:
        return "n/a"
    return f"{100 * rate:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def difference(r: dict) -> str:
    """A difference of rates with its interval, in percentage points: '+2.3 pts [-0.3, +5.0]'."""
    if r.get("diff") is None:
        return "n/a"
    lo, hi = r["ci"]
    return f"{100 * r['diff']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def pvalue(p) -> str:
    return "n/a" if p is None else (f"{p:.3f}" if p >= 0.001 else "<0.001")
