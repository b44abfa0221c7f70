"""Money, one way everywhere: amounts are ``Decimal`` in code and integer cents in staging.

Kingdee holds CNY amounts to the cent; an amount that does not fit exactly is refused, never rounded.
"""

from __future__ import annotations

from decimal import Decimal

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> int:
    """``Decimal("1280.50")`` → ``128050``; more than two decimal places is an error, not a rounding."""
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"amount {amount} has more than two decimal places")
    return int(cents)


def from_cents(cents: int | None) -> Decimal:
    """``128050`` → ``Decimal("1280.50")`` (always two places; None counts as zero)."""
    return Decimal(int(cents or 0)).scaleb(-2).quantize(CENT)
